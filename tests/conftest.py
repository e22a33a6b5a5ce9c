"""Plugins of the whole suite: the log scan (tests/log_scan.py) watches every test's log
output for the credential values it used; pytester runs the scan's own proof."""

pytest_plugins = ["pytester", "tests.log_scan"]
