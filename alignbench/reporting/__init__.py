"""Reporting: the comparison report (`report`, `sections`, `scores`), its statistics (`stats`, proved by `simulation`),
the sweep's tables from the leaderboard (`leaderboard`), connector costs (`cost`), training curves (`curves`); Markdown
tables through pandas (`tables`)."""
