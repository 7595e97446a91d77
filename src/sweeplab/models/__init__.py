"""Networks. Every builder takes ``input_shape`` and ``num_outputs`` (given by
the data module) plus its own hyper-parameters from ``conf/model``."""
