"""The analysis of a toysweep store: metrics, seed rules, theory, analysis steps and figure
families (docs/architecture.md). Imports only `sweep.reader` from the engine, and never torch."""
