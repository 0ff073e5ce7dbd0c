"""The data: public data sets read into contract event records, and the synthetic stream."""
