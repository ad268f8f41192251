"""Layer converters; importing this package registers all of them."""
from . import attention, conv, convlstm, core, cudnn, merge, norm, ops, pool, rnn, tfops, wrappers  # noqa: F401
