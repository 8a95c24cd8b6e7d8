"""The study: one pipeline record that trains the three regimes, evaluates, captures, ablates and reports."""
