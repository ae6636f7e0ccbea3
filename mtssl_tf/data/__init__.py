"""Data: decoding, colour conversion, sample data and TFRecord I/O."""
