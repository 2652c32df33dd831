"""The analyse stage: metrics with bootstrap CIs, calibration, the figures, the report and the errors page.
"""
