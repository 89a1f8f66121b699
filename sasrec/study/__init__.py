"""The study: the steps the notebooks call, EDA, plots, the experiments grid and the templated report."""
