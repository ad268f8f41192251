"""Every size, count and depth limit the readers enforce, in one place.

A file is measured against these *before* anything is read, inflated or walked, so a
crafted file cannot exhaust memory, time or the stack. Genuine checkpoints stay far
below every one of them. The README section "Safety: what weightviz refuses and why"
explains each; ``tests/test_hostile.py`` has a file that trips it.

The readers import their limits from here (``from .limits import X as MAX_...``), so
the values below are the ones in force. There is no switch to lift them at run time:
a file over a limit is re-saved, or read with its own library and handed to weightviz
as arrays (see the README).
"""
from __future__ import annotations

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# --- headers and text read into memory --------------------------------------------
SAFETENSORS_MAX_HEADER = 100_000_000   # JSON header bytes (safetensors' own MAX_HEADER_SIZE)
SAFETENSORS_MAX_INDEX = 100_000_000    # bytes of a *.safetensors.index.json
NPY_MAX_HEADER = 1 * MiB               # .npy header dict (NumPy's own default is 10,000 chars)
JSON_MAX_BYTES = 64 * MiB              # a Keras config.json / metadata.json / to_json() file
TORCH_MAX_PICKLE = 256 * MiB           # a torch data.pkl (about 100 bytes per tensor in practice)
PICKLE_MAX_BYTEARRAY = 1 * MiB         # a bytearray a torch pickle may build
PICKLE_MAX_BYTES = 2 * GiB             # a pickled NumPy object array read into memory

# --- zip archives (.pt, .npz, .keras): checked on the directory, before inflating ----
ZIP_MAX_MEMBERS = 1_000_000            # members in a torch / npz zip
KERAS_ZIP_MAX_MEMBERS = 10_000         # members in a .keras archive
ZIP_MAX_RATIO = 200                    # declared / compressed size of a member (weights: ~1.1:1,
ZIP_RATIO_SLACK = 256 * MiB            # a bomb ~1000:1); members under this are not held to it
                                       # (an all-zeros tensor deflates ~1000:1 too)
KERAS_MAX_INFLATED = 4 * GiB           # a deflated model.weights.h5 is inflated into memory

# --- HDF5 ---------------------------------------------------------------------------
HDF5_MAX_OBJECTS = 1_000_000           # links visited in one file
HDF5_MAX_DEPTH = 64                    # group nesting followed
HDF5_MAX_RATIO = 1100                  # declared / stored bytes of a compressed dataset
HDF5_MAX_UNSTORED = 1 * MiB            # an uncompressed dataset may declare this much more than it stores
KERAS_MAX_NAMES = 200_000              # entries of a layer_names / weight_names attribute
HDF5_ATTRIBUTE_TIMEOUT_S = 5           # seconds to read one variable-length string attribute; they
                                       # are read in a child process (libhdf5 can loop forever on a
                                       # damaged global heap), killed past this

# --- GGUF (llama.cpp): counts and lengths are 64-bit in the header ---------------------
GGUF_MAX_HEADER = 256 * MiB            # key/values + tensor infos (a 262k-token vocabulary: ~10 MB)
GGUF_MAX_TENSORS = 1_000_000           # tensor infos (an unfused 256-expert MoE: ~45,000)
GGUF_MAX_KEYS = 100_000                # key/value pairs (real files: ~20-60)
GGUF_MAX_NAME = 64 * KiB               # bytes of a key or tensor name (llama.cpp: 63 for tensors)
GGUF_MAX_DIMS = 4                      # dimensions of a tensor (ggml's GGML_MAX_DIMS)
GGUF_MAX_ARRAY_DEPTH = 4               # arrays nested in a metadata value
GGUF_MAX_ALIGNMENT = 1 * MiB           # general.alignment (default 32)
GGUF_KEPT_STRING = 64 * KiB            # a metadata string longer than this is kept cut (a chat
                                       # template: ~1-20 KB); arrays are kept as counts

# --- ONNX (protobuf ModelProto): walked field by field over a memory map ----------------
ONNX_MAX_GRAPH_DEPTH = 32              # subgraphs nested in node attributes (If / Loop / Scan bodies)
ONNX_MAX_NODES = 5_000_000             # nodes walked, over every graph and subgraph
ONNX_MAX_TENSORS = 1_000_000           # initializers + Constant-node tensors listed
ONNX_MAX_DIMS = 32                     # dimensions of a tensor (ONNX sets none; NumPy allows 64)
ONNX_MAX_NAME = 64 * KiB               # bytes of a tensor, node or value name
ONNX_MAX_DIM_PARAM = 64 * KiB          # bytes of a symbolic dim (torch writes ~330-byte expressions)
ONNX_MAX_EXTERNAL_FILES = 10_000       # distinct external-data files one model may name

# --- training checkpoints of many ranks (torch.distributed.checkpoint, DeepSpeed) -------
DCP_MAX_METADATA = 1 * GiB             # a DCP .metadata pickle (a 405B model on 512 ranks: ~0.4 GB)
DCP_MAX_ITEMS = 10_000_000             # state-dict items it lists
DCP_MAX_CHUNKS = 10_000_000            # tensor chunks and storage spans it lists, over all items
DCP_MAX_DIMS = 64                      # dimensions of a tensor or chunk
DEEPSPEED_MAX_LATEST = 4 * KiB         # the `latest` file naming the step folder

# --- nesting and object counts (pickles, configs, object arrays) ---------------------
WALK_MAX_DEPTH = 64                    # containers nested inside a torch checkpoint
WALK_MAX_NODES = 5_000_000             # objects walked in a torch checkpoint
CONFIG_MAX_NODES = 1_000_000           # JSON objects walked in a Keras config
OBJECT_ARRAY_MAX_DEPTH = 32            # containers nested inside a NumPy object array
# JSON parsing is bounded by Python's recursion limit (1,000 levels): deeper is refused.
