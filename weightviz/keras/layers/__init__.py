"""Layer converters; importing this package registers all of them."""
from . import (apps, attention, conv, convlstm, core, cudnn, einsum, merge, norm, ops,  # noqa: F401
               pool, rnn, tfops, wrappers)
