"""Demo sources built from data that ships with installed packages (no downloads).

`optiserve optimize optimize.demos.digits:trained_digits_classifier` (the default),
`optimize.demos.digits:trained_digits_cnn`, `optimize.demos.minilm:minilm_source`
and `optimize.demos.keras_digits:pruned_keras_digits`; `sentences` generates the
text the MiniLM demo, its tests and the benchmarks use.
"""
