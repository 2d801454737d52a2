"""One module per report section (`python run.py report`): each turns the typed run folder into its slots.

`reporting.context.build` calls them in report order; templates/report.md.j2 renders the result.
"""
