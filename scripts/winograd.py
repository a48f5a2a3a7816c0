"""Winograd convolutions F(4x4, 3x3) and F(2x2, 3x3) in the blocked-channel layout, with a
schedule template.

A 3x3 stride-1 convolution computes each 4x4 output tile from a 6x6 input tile. Winograd's
minimal filtering does it with 36 multiplications per (input, output) channel pair where the
direct convolution does 144 (F(2x2, 3x3): 16 for 36, from 4x4 input tiles): the input tile
and the 3x3 filter are transformed into a 6x6 "frequency" tile each, multiplied
elementwise, and transformed back. Summed over input
channels, the elementwise products are 36 independent matrix products (tiles x input channels
times input channels x output channels), which is where the time goes and what the CPU is
good at. The filters are constants, so their transform is done once, at compile time.

The transforms' matrices come from Toom-Cook interpolation at the points 0, 1, -1, 2, -2 and
infinity (:func:`winograd_matrices`); their entries are small (0, +-1, +-2, +-4, +-8 and
fractions), so float32 keeps ~1e-5 relative accuracy.

Where it pays: a transformed filter is 4x (F(4x4)) or 1.8x (F(2x2)) the size of the 3x3 one,
and each of its values is used once per tile. At 7x7 F(4x4) has 4 tiles: a ResNet's 512->512
filters would be streamed from memory for 4 uses each. So the tile is chosen per map
(``TILES``): F(4x4) where it has at least 32 tiles (28x28 and up), else F(2x2) where that
has at least 16 (7x7 and up), else the direct convolution.

Stages of one kernel (each a block of the PrimFunc, named for the schedule template):
``winograd_pad`` (zero border), ``winograd_rows`` and ``winograd_data`` (the input transform,
rows then columns, so each 6x6 tile costs 2 x 6 x 6 short sums rather than 36 x 36),
``winograd_gemm`` (the 36 or 16 matrix products), ``winograd_inverse_rows`` and ``winograd_out``
(the output transform), then whatever elementwise ops Relax fused after it (bias, ReLU,
residual add).
"""

from __future__ import annotations

import numpy as np

KERNEL = 3
# (output tile edge, the fewest tiles of it a map must have), largest tile first. A transformed
# filter's values are used once per tile, and F(4x4, 3x3)'s filters are 4x the size of the
# 3x3 ones, F(2x2, 3x3)'s 1.8x: with too few tiles they are streamed from memory for too few
# uses. ResNet-18 on AVX-512 (interleaved A/B, untuned templates): F(4x4) at 56x56 and 28x28
# and F(2x2) at 14x14 and 7x7 (49 and 16 tiles) ran as fast as F(4x4) at 14x14 too
# (1.19 / 1.17x onnxruntime's speed) with a 16 MiB smaller artifact; F(2x2) everywhere 1.06x;
# F(4x4) at 14x14 and direct at 7x7 0.99x (the 7x7 layers at ~100 GFLOP/s led the profile).
TILES = ((4, 32), (2, 16))
# Below this many input or output channels the transforms outweigh the products they save
# (an RGB stem, a tiny test model's 3 -> 8).
MIN_CHANNELS = 16
STAGES = ("winograd_pad", "winograd_rows", "winograd_data", "winograd_gemm", "winograd_inverse_rows", "winograd_out")


def winograd_matrices(m: int, r: int = KERNEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, G) of F(m, r), as float64: the output is A^T [(G g G^T) * (B^T d B)] A for an
    (m + r - 1)^2 input tile d and an r x r filter g.

    Toom-Cook: linear convolution s = g * h of an r-tap filter and an m-tap signal is
    evaluation of both polynomials at m + r - 1 points, pointwise products, and interpolation
    (the inverse Vandermonde matrix). Correlation, what a convolution layer computes, is that
    algorithm transposed: A evaluates the m-tap side, G the filter, B is the interpolation.
    """
    alpha = m + r - 1
    finite = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5][: alpha - 1]

    def evaluation(columns: int) -> np.ndarray:
        rows = [[p**j for j in range(columns)] for p in finite]
        rows.append([0.0] * (columns - 1) + [1.0])  # the point at infinity: the top coefficient
        return np.array(rows)

    a_matrix, b_matrix, g_matrix = evaluation(m), np.linalg.inv(evaluation(alpha)), evaluation(r)
    # Scale each column of B to small integers (its smallest entry to 1) and the matching
    # row of G by the inverse: the product is unchanged, and the input transform, computed
    # for every tile at run time, needs fewer multiplications and rounds less.
    b_matrix[np.abs(b_matrix) < 1e-9] = 0.0
    scale = np.array([1 / np.abs(col[col != 0]).min() for col in b_matrix.T])
    return a_matrix, np.round(b_matrix * scale), g_matrix / scale[:, None]


def transform_weight(weight: np.ndarray, out_block: int, tile: int) -> np.ndarray:
    """A 3x3 filter bank in OIHW{i}i{o}o (ConvertLayout's blocked weights) as the GEMM's
    operand for F(tile, 3): [a, a, K / out_block, C, out_block] (G g G^T of every filter;
    a = tile + 2)."""
    g_matrix = winograd_matrices(tile)[2]
    alpha = tile + KERNEL - 1
    chunks_out, chunks_in, _, _, block_in, block_out = weight.shape
    channels_out, channels_in = chunks_out * block_out, chunks_in * block_in
    filters = weight.transpose(0, 5, 1, 4, 2, 3).reshape(channels_out, channels_in, KERNEL, KERNEL).astype(np.float64)
    transformed = np.einsum("ei,kcij,vj->evkc", g_matrix, filters, g_matrix)
    packed = transformed.reshape(alpha, alpha, channels_out // out_block, out_block, channels_in).transpose(0, 1, 2, 4, 3)
    return np.ascontiguousarray(packed, dtype=weight.dtype)


def tiles_of(height: int, width: int, tile: int) -> int:
    return -(-height // tile) * -(-width // tile)


def tile_for(height: int, width: int) -> int | None:
    """The output tile edge for a map: the first of TILES with its number of tiles."""
    return next((t for t, fewest in TILES if tiles_of(height, width, t) >= fewest), None)


def tile_if_applies(attrs, data_shape, weight_shape) -> int | None:
    """Whether a blocked conv2d is one this computes: 3x3, stride 1, dilation 1, padding 1,
    not grouped, at least MIN_CHANNELS channels in and out, on a map with enough output
    tiles; returns its output tile edge (:func:`tile_for`), or None."""
    if data_shape is None or weight_shape is None or len(data_shape) != 5 or attrs.groups != 1:
        return None
    try:
        data_shape, weight_shape = [int(d) for d in data_shape], [int(d) for d in weight_shape]
    except TypeError:  # a symbolic size
        return None
    if [int(v) for v in attrs.strides] != [1, 1] or [int(v) for v in attrs.dilation] != [1, 1]:
        return None
    if [int(v) for v in attrs.padding] != [1, 1, 1, 1]:
        return None
    if weight_shape[2:4] != [KERNEL, KERNEL]:
        return None
    channels_in, channels_out = data_shape[1] * data_shape[4], weight_shape[0] * weight_shape[5]
    if min(channels_in, channels_out) < MIN_CHANNELS:
        return None
    return tile_for(data_shape[2], data_shape[3])


def _combine(index, coefficients: np.ndarray, term, dtype: str):
    """The ``index``-th of the sums ``sum_k coefficients[k, j] * term(k)``, as a TIR
    expression with only the nonzero terms: a Select over j, which folds to one sum once the
    schedule unrolls ``index``'s loop."""
    from tvm import tirx

    def one_sum(column):
        expr = None
        for k, c in enumerate(column):
            if c == 0:
                continue
            value = term(k)
            scaled = value if c == 1 else -value if c == -1 else value * tirx.const(float(c), dtype)
            expr = scaled if expr is None else expr + scaled
        return expr

    sums = [one_sum(coefficients[:, j]) for j in range(coefficients.shape[1])]
    expr = sums[-1]
    for j in range(len(sums) - 2, -1, -1):
        expr = tirx.Select(index == j, sums[j], expr)
    return expr


def winograd_nchwc(data, packed, out_dtype: str):
    """The convolution of NCHW{b}c ``data`` with :func:`transform_weight`'s ``packed`` filters,
    padding 1, into NCHW{o}c (o = packed's last extent)."""
    from tvm import te, topi

    batch, _, height, width, in_block = (int(d) for d in data.shape)
    alpha, _, out_chunks, channels, out_block = (int(d) for d in packed.shape)
    tile = alpha - KERNEL + 1
    a_matrix, b_matrix, _ = winograd_matrices(tile)
    rows, cols = -(-height // tile), -(-width // tile)
    # Tiles are numbered over the batch: image n has tiles n * per_image ... (n + 1) * per_image - 1
    # (no index arithmetic for a single image: the kernels the tuning databases know).
    per_image = rows * cols
    tiles = batch * per_image

    def image_and_tile(t):
        return (0, t) if batch == 1 else (t // per_image, t % per_image)

    def tile_of_pixel(n, h, w):
        at = h // tile * cols + w // tile
        return at if batch == 1 else n * per_image + at
    pad_after = [0, 0, rows * tile + 1 - height, cols * tile + 1 - width, 0]
    padded = topi.nn.pad(data, [0, 0, 1, 1, 0], pad_after, name="winograd_pad")

    def pixel(t, y, x, c):
        n, at = image_and_tile(t)
        return padded[n, c // in_block, at // cols * tile + y, at % cols * tile + x, c % in_block]

    # B^T d B: along each row first (x -> nu), then along the columns (y -> eps).
    row_pass = te.compute(
        (tiles, alpha, alpha, channels),
        lambda t, y, nu, c: _combine(nu, b_matrix, lambda x: pixel(t, y, x, c).astype(out_dtype), out_dtype),
        name="winograd_rows",
    )
    transformed = te.compute(
        (alpha, alpha, tiles, channels),
        lambda eps, nu, t, c: _combine(eps, b_matrix, lambda y: row_pass[t, y, nu, c], out_dtype),
        name="winograd_data",
    )
    c = te.reduce_axis((0, channels), name="c")
    products = te.compute(
        (alpha, alpha, out_chunks, tiles, out_block),
        lambda eps, nu, k, t, v: te.sum(transformed[eps, nu, t, c] * packed[eps, nu, k, c, v].astype(out_dtype), axis=c),
        name="winograd_gemm",
    )
    # A^T M A: along nu first, then eps.
    inverse_rows = te.compute(
        (out_chunks, tiles, alpha, tile, out_block),
        lambda k, t, eps, x, v: _combine(x, a_matrix, lambda nu: products[eps, nu, k, t, v], out_dtype),
        name="winograd_inverse_rows",
    )
    return te.compute(
        (batch, out_chunks, height, width, out_block),
        lambda n, k, h, w, v: _combine(
            h % tile, a_matrix, lambda eps: inverse_rows[k, tile_of_pixel(n, h, w), eps, w % tile, v], out_dtype
        ),
        name="winograd_out",
    )


def legalize_conv2d(bb, call):
    """A blocked conv2d as a Winograd kernel (the filters transformed now), or None where
    :func:`tile_if_applies` says no or the filters are not constants."""
    import tvm
    from tvm import relax

    weight = call.args[1]
    if not isinstance(weight, tvm.ir.expr.Constant):
        return None
    tile = tile_if_applies(call.attrs, call.args[0].ty.shape, weight.ty.shape)
    if tile is None:
        return None
    out_dtype = str(call.attrs.out_dtype or call.args[0].ty.dtype)
    packed = relax.const(transform_weight(weight.value.numpy(), int(weight.ty.shape[5]), tile))
    # The kernel is several blocks, which Relax's op-pattern analysis calls opaque; it ends
    # in an elementwise output like any convolution, so the ops after it may fuse into it.
    out_ewise_fusable = 4  # relax's OpPatternKind kOutEWiseFusable
    return bb.call_te(
        winograd_nchwc,
        call.args[0],
        packed,
        out_dtype,
        primfunc_name_hint="conv2d_winograd",
        primfunc_attrs={"op_pattern": out_ewise_fusable},
    )


# --------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------


def _parts(sch):
    """(the six stages, [fused elementwise blocks]) of a Winograd kernel, or None."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = tuple(sch.get(b).name_hint for b in blocks)
    if names[: len(STAGES)] != STAGES:
        return None
    return blocks[: len(STAGES)], blocks[len(STAGES) :]


def is_winograd_kernel(mod) -> bool:
    """Whether a task's PrimFunc is a Winograd convolution this template schedules."""
    from tvm import s_tir

    try:
        return _parts(s_tir.Schedule(mod)) is not None
    except Exception:  # not a schedulable PrimFunc at all
        return False


def _gemm_extents(sch, gemm) -> tuple[int, int, int]:
    """(output chunks, tiles, output block) of the matrix products."""
    loops = [int(sch.get(loop).extent) for loop in sch.get_loops(gemm)]
    return loops[2], loops[3], loops[4]


def _register_limit(block: int, unit, oc_group: int) -> int:
    """Tiles per register block: the registers hold reg_n x v sums, v weight vectors and a
    broadcast input (v = the vectors of ``oc_group`` output blocks)."""
    vectors = oc_group * max(1, block // unit.lanes)
    return max(2, (unit.registers - 1 - vectors) // vectors)


def reg_n_choices(sch, unit, oc_group: int = 1) -> list[int]:
    """Tiles per register block: 4 .. the register limit, at most 8 or a divisor of the tile
    count (no tail)."""
    _, tiles, block = _gemm_extents(sch, _parts(sch)[0][3])
    limit = _register_limit(block, unit, oc_group)
    choices = [r for r in range(4, min(tiles, limit) + 1) if r <= 8 or tiles % r == 0]
    return choices or [min(tiles, limit)]


def oc_group_choices(sch, unit) -> list[int]:
    """Output blocks per register tile: 1, and 2 where the chunks pair up and 4 tiles of two
    blocks' sums fit the registers (AVX-512's 32; AVX2's 16 would not hold them)."""
    chunks, _, block = _gemm_extents(sch, _parts(sch)[0][3])
    return [1, 2] if chunks % 2 == 0 and _register_limit(block, unit, 2) >= 4 else [1]


def _apply(sch, reg_n, oc_group: int = 1) -> None:
    """The template on one schedule; ``reg_n`` an int or a sampled ExprRV. Each stage is its
    own parallel loop nest: the input transform per (tile, input block), the matrix products
    per (frequency, ``oc_group`` output blocks) with ``reg_n`` tiles x those blocks in
    registers (two blocks: each broadcast input feeds twice the multiply-adds), the output
    transform per (output block, row of tiles) with the fused elementwise ops."""
    (pad, rows, data, gemm, inverse_rows, out), epilogue = _parts(sch)
    in_block = int(sch.get(rows).reads[0].source.shape[4])

    eps, nu, tile, channel = sch.get_loops(data)
    chunk, lane = sch.split(channel, [None, in_block])
    sch.reorder(tile, chunk, eps, nu, lane)
    outer = sch.fuse(tile, chunk)
    sch.parallel(outer)
    sch.compute_at(rows, outer)
    for loop in (eps, nu):
        sch.unroll(loop)
    sch.vectorize(lane)
    y, x, lane = sch.get_loops(rows)[-3:]
    sch.unroll(y)
    sch.unroll(x)
    sch.vectorize(lane)
    sch.compute_inline(pad)

    eps, nu, k, tile, v, channel = sch.get_loops(gemm)
    k, k_inner = sch.split(k, [None, oc_group])
    tile_outer, tile_inner = sch.split(tile, [None, reg_n])
    sch.reorder(tile_outer, channel, k_inner, tile_inner, v)
    sch.parallel(sch.fuse(eps, nu, k))
    sch.unroll(k_inner)
    sch.unroll(tile_inner)
    sch.vectorize(v)
    init = sch.decompose_reduction(gemm, channel)
    sch.vectorize(sch.get_loops(init)[-1])

    final = out
    if epilogue:
        for block in (out, *epilogue[:-1]):
            sch.compute_inline(block)
        final = epilogue[-1]
    n, k, h, w, v = sch.get_loops(final)
    tile = int(sch.get(inverse_rows).writes[0].source.shape[3])
    h_outer, h_inner = sch.split(h, [None, tile])
    w_outer, w_inner = sch.split(w, [None, tile])
    sch.reorder(h_outer, w_outer, h_inner, w_inner, v)
    sch.parallel(sch.fuse(n, k, h_outer))
    sch.compute_at(inverse_rows, w_outer)
    sch.unroll(h_inner)
    sch.unroll(w_inner)
    sch.vectorize(v)
    eps, x, v = sch.get_loops(inverse_rows)[-3:]
    sch.unroll(eps)
    sch.unroll(x)
    sch.vectorize(v)


def winograd_space(sch, unit):
    """MetaSchedule's design spaces of a Winograd kernel: one per choice of output blocks per
    register tile, with reg_n sampled in each (bind ``unit``, the target's
    nchwc.VectorUnit, with functools.partial)."""
    spaces = []
    for oc_group in oc_group_choices(sch, unit):
        space = sch.copy()
        choices = reg_n_choices(space, unit, oc_group)
        reg_n = space.sample_categorical(choices, [1 / len(choices)] * len(choices))
        _apply(space, reg_n, oc_group)
        spaces.append(space)
    return spaces


def schedule_winograd(sch, unit) -> bool:
    """The template with fixed choices (one output block per tile; reg_n the largest choice
    dividing the tiles, else 8) for a kernel without a tuning record; False if the kernel is
    not a Winograd convolution."""
    if _parts(sch) is None:
        return False
    choices = reg_n_choices(sch, unit)
    _, tiles, _ = _gemm_extents(sch, _parts(sch)[0][3])
    reg_n = next((r for r in reversed(choices) if tiles % r == 0), min(8, choices[-1]))
    _apply(sch, reg_n)
    return True
