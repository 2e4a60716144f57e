"""Speed tooling (development only): the harness, floors and peer comparisons behind the committed
``leaderboards/speed*.md``. Not installed with the package (``pip install`` ships ``benchmark``,
``callbacks`` and ``datamodules``); run from a checkout, e.g. ``python -m perf.harness``. It imports the
package as a user would; the package never imports it (``tests/test_architecture.py``).
"""
