"""Blocked-channel (NCHW[x]c) convolutions for CPU targets, with a schedule template.

ONNX models come in NCHW with OIHW weights. A CPU convolution wants output channels
innermost, so that vector registers hold a few output pixels' channels and every weight load
feeds several pixels. MetaSchedule's generic search did not find such a schedule within
budgets of hundreds of trials per kernel, in NCHW or in the blocked layout (a 64->64 3x3 at
56x56 on a 2-core AVX2 VM: 4.5 and 4.3 ms after 128 trials); the classic x86 schedule for the
blocked layout (TVM's hand-written x86 conv2d before MetaSchedule) ran it in 1.8 ms (2
threads, ~125 GFLOP/s) with no search at all. So, for ``--conv-layout NCHWc``:

1. :func:`convert_layout` rewrites every 2-D convolution (plain or depthwise) whose channels
   allow it to NCHW{b}c data and OIHW{i}i{b}o weights (b = two vectors of the target's
   float32: 16 on AVX2, 32 on AVX-512; else one vector, else 8), with Relax's
   ConvertLayout: the ops between convolutions follow, weights are transformed at compile
   time (FoldConstant), and NCHW comes back where an op cannot follow (flatten, the output).
   Output channels that the first block nearly divides (SqueezeNet's 1000 classes) are
   computed padded with zero filters to its multiple and sliced back.
2. :func:`legalize` lowers those convolutions with TOPI's NCHWc computes (Relax's default
   legalization handles unblocked layouts only).
3. :func:`conv_space` is the MetaSchedule design space of such a kernel (pad, convolution,
   fused elementwise epilogue): output pixels of a row in register blocks of ``reg_n``,
   the channel block vectorized, reduction over input-channel blocks, kernel rows and
   columns, then input channels, then the register block; ``reg_n`` is sampled, and the
   channel blocks per tile (one, or two on AVX-512), the kernel-column loop unrolled or
   not and the padding made per row or once are design spaces of their own.
   :func:`schedule_conv` is the same with fixed choices, used for kernels the tuning
   database has no record of.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VectorUnit:
    """The target's vector register file, which bounds the register block: AVX2's 16
    registers of 8 float32, or AVX-512's 32 of 16."""

    registers: int
    lanes: int

    @staticmethod
    def of(target) -> VectorUnit:
        from tvm.target import codegen

        return VectorUnit(32, 16) if codegen.target_has_features("avx512f", target) else VectorUnit(16, 8)

    @property
    def blocks(self) -> tuple[int, ...]:
        """Output-channel blocks, the first that divides the channels taken: two vectors of
        float32 (AVX2 16, AVX-512 32: twice the multiply-adds per weight load of one), one
        vector, else 8 (MobileNetV2's 24). Untuned AVX-512 (a 2-vCPU Sapphire Rapids VM):
        32 before 16 took MobileNetV2 from 0.64 to 0.82 of onnxruntime's speed and ResNet-18
        from 0.75 to 0.84."""
        return tuple(dict.fromkeys((2 * self.lanes, self.lanes, 8)))


CONV_BLOCKS = ("conv2d_NCHWc", "DepthwiseConv2d")
PAD_BLOCKS = ("data_pad", "PaddedInput")


def channel_block(channels: int, blocks: tuple[int, ...]) -> int | None:
    return next((b for b in blocks if channels % b == 0), None)


def input_block(channels: int, blocks: tuple[int, ...]) -> int:
    """The data's channel block: its producer's output block, or all channels (the RGB stem)."""
    return channel_block(channels, blocks) or channels


def conv_layouts(call, blocks: tuple[int, ...]) -> dict:
    """ConvertLayout's per-call choice: blocked layouts for a conv2d that allows them."""
    plain = {"relax.nn.conv2d": ["NCHW", "OIHW", "NCHW"]}
    if call.op.name != "relax.nn.conv2d":
        return {}
    attrs = call.attrs
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return plain
    data_shape = call.args[0].ty.shape
    weight_shape = call.args[1].ty.shape
    if data_shape is None or weight_shape is None:
        return plain
    try:
        channels = int(data_shape[1])
        out_channels, group_channels = int(weight_shape[0]), int(weight_shape[1])
    except TypeError:  # a symbolic channel count
        return plain
    out_block = channel_block(out_channels, blocks)
    if out_block is None:
        return plain
    if attrs.groups == 1:
        data = input_block(channels, blocks)
        return {"relax.nn.conv2d": [f"NCHW{data}c", f"OIHW{data}i{out_block}o", f"NCHW{out_block}c"]}
    if attrs.groups == channels == out_channels and group_channels == 1:  # depthwise
        return {"relax.nn.conv2d": [f"NCHW{out_block}c", f"OIHW1i{out_block}o", f"NCHW{out_block}c"]}
    return plain


def _call_rewriter(name: str, rewrite):
    """A module pass that replaces each call of the Relax functions by ``rewrite(call)``
    (its arguments rewritten first), then drops what is left unused."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):
            return rewrite(super().visit_call_(call))

    @tvm.transform.module_pass(opt_level=0, name=name)
    def run(mod, _ctx):
        rewriter = Rewriter(mod)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())

    return run


def _clip_as_relax_ops():
    """A pass: TVM's ONNX importer emits Clip (MobileNetV2's ReLU6) as calls of TE-made
    PrimFuncs ``maximum``/``minimum`` with a scalar bound; ConvertLayout does not see into
    those and would put every Clip back in NCHW, with a layout transform on each side. They
    become Relax's maximum/minimum ops, which follow any layout and fuse into the
    convolution before them."""
    import tvm
    from tvm import relax

    ops = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def rewrite(call):
        if call.op != call_tir:
            return call
        callee, args = call.args[0], call.args[1].fields
        name = callee.name_hint.rstrip("0123456789_")
        bound = args[1] if len(args) == 2 else None
        if name in ops and isinstance(bound, tvm.ir.expr.Constant) and len(bound.ty.shape) == 0:
            return ops[name](args[0], bound)
        return call

    return _call_rewriter("ClipAsRelaxOps", rewrite)


# Padding output channels to the first block costs at most this much more work.
MAX_CHANNEL_PADDING = 1.05


def _pad_out_channels(blocks: tuple[int, ...]):
    """A pass: a convolution whose output channels the first block nearly divides
    (SqueezeNet's 1000 classes: otherwise blocks of 8, a quarter of an AVX-512 vector)
    computes them padded with zero filters to the next multiple (1024: blocks of 32),
    and the extra channels are sliced off after it."""
    import numpy as np
    import tvm
    from tvm import relax

    conv2d = tvm.ir.Op.get("relax.nn.conv2d")

    def rewrite(call):
        if call.op != conv2d or call.attrs.groups != 1 or not isinstance(call.args[1], tvm.ir.expr.Constant):
            return call
        if (call.attrs.data_layout, call.attrs.kernel_layout, call.attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return call
        weight = call.args[1].value.numpy()
        channels = weight.shape[0]
        padded = -(-channels // blocks[0]) * blocks[0]
        if padded == channels or padded > channels * MAX_CHANNEL_PADDING:
            return call
        filler = np.zeros((padded - channels, *weight.shape[1:]), weight.dtype)
        conv = relax.Call(conv2d, [call.args[0], relax.const(np.concatenate([weight, filler]))], call.attrs)
        return relax.op.strided_slice(conv, axes=[1], begin=[0], end=[channels])

    return _call_rewriter("PadOutChannels", rewrite)


def convert_layout(unit: VectorUnit):
    """The pass: blocked layouts for the convolutions that allow them, weights folded."""
    import functools

    import tvm
    from tvm import relax

    # FoldConstant first: the importer computes Clip's bounds (where(isnan(b), -inf, b)).
    passes = [
        relax.transform.FoldConstant(),
        _clip_as_relax_ops(),
        _pad_out_channels(unit.blocks),
        relax.transform.ConvertLayout({}, functools.partial(conv_layouts, blocks=unit.blocks)),
        relax.transform.FoldConstant(),
    ]
    return tvm.transform.Sequential(passes)


def depthwise_nchwc(data, weight, strides, padding, dilation, out_dtype):
    """Depthwise convolution in NCHW{b}c with OIHW1i{b}o weights (TOPI 0.27 declares
    depthwise_conv2d_NCHWc but registers no compute for it)."""
    from tvm import te, topi

    top, left, bottom, right = padding
    padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, bottom, right, 0], name="data_pad") if any(padding) else data
    batch, chunks, height, width, block = (int(d) for d in data.shape)
    kernel_h, kernel_w = int(weight.shape[2]), int(weight.shape[3])
    out_h = (height + top + bottom - dilation[0] * (kernel_h - 1) - 1) // strides[0] + 1
    out_w = (width + left + right - dilation[1] * (kernel_w - 1) - 1) // strides[1] + 1
    kh = te.reduce_axis((0, kernel_h), name="kh")
    kw = te.reduce_axis((0, kernel_w), name="kw")
    return te.compute(
        (batch, chunks, out_h, out_w, block),
        lambda n, c, y, x, v: te.sum(
            padded[n, c, y * strides[0] + kh * dilation[0], x * strides[1] + kw * dilation[1], v].astype(out_dtype)
            * weight[c, 0, kh, kw, 0, v].astype(out_dtype),
            axis=[kh, kw],
        ),
        name="DepthwiseConv2d",
    )


def _legalize_conv2d(bb, call):
    import winograd
    from tvm import topi
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    attrs = call.attrs
    if len(attrs.data_layout) == 4:
        return _nn_conv2d(bb, call)
    out_dtype = str(attrs.out_dtype or call.args[0].ty.dtype)
    strides, padding, dilation = ([int(v) for v in values] for values in (attrs.strides, attrs.padding, attrs.dilation))
    if attrs.groups == 1:
        winograd_kernel = winograd.legalize_conv2d(bb, call)
        if winograd_kernel is not None:
            return winograd_kernel
        compute = topi.nn.conv2d_NCHWc
        args = (strides, padding, dilation, attrs.data_layout, attrs.out_layout, out_dtype)
    else:
        compute = depthwise_nchwc
        args = (strides, padding, dilation, out_dtype)
    return bb.call_te(compute, call.args[0], call.args[1], *args, primfunc_name_hint="conv2d_nchwc")


def legalize():
    """Relax's LegalizeOps, with blocked-layout convolutions lowered by TOPI's NCHWc computes,
    or as Winograd kernels where scripts/winograd.py says they apply (3x3, stride 1, maps of
    7x7 and up)."""
    from tvm import relax

    return relax.transform.LegalizeOps({"relax.nn.conv2d": _legalize_conv2d})


# --------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------


def _blocks(sch):
    """(pad or None, the convolution, [epilogue blocks]) of a kernel, or None if it is not one."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    conv = [i for i, n in enumerate(names) if n.startswith(CONV_BLOCKS)]
    if len(conv) != 1:
        return None
    at = conv[0]
    before = [blocks[i] for i in range(at) if names[i].startswith(PAD_BLOCKS)]
    if len(before) != at or len(before) > 1:  # something else computed before the convolution
        return None
    return (before[0] if before else None), blocks[at], blocks[at + 1 :]


def max_reg_n(sch, conv, unit: VectorUnit, oc_group: int = 1) -> int:
    """The register block's limit: the registers hold reg_n x v sums, v weight vectors and
    one broadcast input (v = the vectors of ``oc_group`` channel blocks); one more sum
    spills (AVX2: reg_n = 7 at block 16 ran at 74 GFLOP/s, 6 at 128, on a 64->64 3x3 at
    56x56)."""
    vectors = oc_group * max(1, int(sch.get(sch.get_loops(conv)[4]).extent) // unit.lanes)
    return max(2, (unit.registers - 1 - vectors) // vectors)


def _apply(sch, pad, conv, epilogue, reg_n, unroll_kw: bool, pad_per_row: bool = False, oc_group: int = 1):
    """The template on one schedule; ``reg_n`` an int or a sampled ExprRV. ``oc_group``
    channel blocks share a tile (AVX-512: a row of 7 x 2 blocks of 32 is 28 sums, 4 weight
    vectors loaded per 7 broadcasts, where one block does 14 sums per 2 + 7). The padded input
    is made per output row inside the parallel loop (``pad_per_row``: 3 input rows of every
    channel block again for each row and output block, in cache) or once before it (one
    pass over the input); which is faster varies by layer and is measured."""
    for block in epilogue[:-1]:
        sch.compute_inline(block)
    loops = sch.get_loops(conv)
    n, oc_chunk, oh, ow, oc_block = loops[:5]
    reduce = loops[5:]
    ow_outer, ow_inner = sch.split(ow, [None, reg_n])
    grouped = []
    if oc_group > 1:
        oc_chunk, oc_inner = sch.split(oc_chunk, [None, oc_group])
        grouped = [oc_inner]
    if len(reduce) == 3:  # ic, kh, kw: input channels split by the data's block
        ic, kh, kw = reduce
        ic_block = _data_block(sch, conv)
        ic_outer, ic_inner = sch.split(ic, [None, ic_block])
        sch.reorder(oc_chunk, oh, ow_outer, ic_outer, kh, kw, ic_inner, *grouped, ow_inner, oc_block)
        first_reduce = ic_outer
    else:  # depthwise: kh, kw
        kh, kw = reduce
        sch.reorder(oc_chunk, oh, ow_outer, kh, kw, ow_inner, oc_block)
        first_reduce = kh
    outer = sch.fuse(n, oc_chunk, oh)
    sch.parallel(outer)
    if epilogue:
        sch.reverse_compute_at(epilogue[-1], ow_outer)
        sch.vectorize(sch.get_loops(epilogue[-1])[-1])
    sch.vectorize(oc_block)
    sch.unroll(ow_inner)
    for loop in grouped:
        sch.unroll(loop)
    if unroll_kw:
        sch.unroll(kw)
    init = sch.decompose_reduction(conv, first_reduce)
    sch.vectorize(sch.get_loops(init)[-1])
    if pad is None:
        return
    if pad_per_row:
        sch.compute_at(pad, outer)
        return
    loops = sch.get_loops(pad)
    sch.parallel(sch.fuse(*loops[:-1]))
    sch.vectorize(loops[-1])


def _data_block(sch, conv) -> int:
    """The input-channel block: the last extent of the data buffer the convolution reads."""
    block = sch.get(conv)
    shapes = [r.source.shape for r in block.reads]
    return int(next(s for s in shapes if len(s) == 5)[4])


def is_conv_kernel(mod) -> bool:
    """Whether a task's PrimFunc is a blocked convolution this template schedules."""
    from tvm import s_tir

    try:
        sch = s_tir.Schedule(mod)
        parts = _blocks(sch)
        if parts is None:
            return False
        _apply(sch, *parts, reg_n=4, unroll_kw=False)
        return True
    except Exception:  # any other shape of kernel: MetaSchedule's generic space
        return False


def reg_n_choices(sch, conv, unit: VectorUnit, oc_group: int = 1) -> list[int]:
    """2 .. the register limit, and the divisors of the row up to two more (7 at 7x7 or
    56x56: a sum or two may spill, but no tail is left). Where the limit is far above 8
    (AVX-512's 32 registers hold 30 sums) the choices are 4 .. 8 and every divisor of the
    row up to the limit: a row in whole tiles (7, 14 or 28 sums) instead of 29 choices
    with tails."""
    width = int(sch.get(sch.get_loops(conv)[3]).extent)
    limit = max_reg_n(sch, conv, unit, oc_group)
    if limit > 8:
        wide = {r for r in range(4, min(width, limit) + 1) if r <= 8 or width % r == 0}
        return sorted(wide) or [width]
    choices = list(range(2, min(width, limit) + 1))
    choices += [r for r in range(limit + 1, min(width, limit + 2) + 1) if width % r == 0]
    return choices or [1]


def oc_group_choices(sch, conv, unit: VectorUnit) -> list[int]:
    """1, and 2 where the output chunks pair up and two blocks' sums of a row segment of at
    least 4 pixels fit in AVX-512's registers (on AVX2 they would not: 4 x 2 x 2 = 16)."""
    chunks = int(sch.get(sch.get_loops(conv)[1]).extent)
    depthwise = len(sch.get_loops(conv)) == 7
    return [1, 2] if chunks % 2 == 0 and not depthwise and max_reg_n(sch, conv, unit, 2) >= 4 else [1]


def conv_space(sch, unit: VectorUnit):
    """MetaSchedule's design spaces of a blocked convolution kernel: one per choice of
    channel blocks per tile, kernel-column unrolling and (where there is padding) where
    the padding is made, with reg_n sampled in each (bind ``unit``, the target's, with
    functools.partial)."""
    spaces = []
    pad, conv, _ = _blocks(sch)
    paddings = (False, True) if pad is not None else (False,)
    for oc_group in oc_group_choices(sch, conv, unit):
        for unroll_kw in (False, True):
            for pad_per_row in paddings:
                space = sch.copy()
                pad, conv, epilogue = _blocks(space)
                choices = reg_n_choices(space, conv, unit, oc_group)
                reg_n = space.sample_categorical(choices, [1 / len(choices)] * len(choices))
                _apply(space, pad, conv, epilogue, reg_n, unroll_kw, pad_per_row, oc_group)
                spaces.append(space)
    return spaces


def schedule_conv(sch, unit: VectorUnit) -> bool:
    """The template with fixed choices (reg_n = the largest choice dividing the row, else 6;
    no unrolling of kernel columns; padding made once) for a kernel without a tuning record;
    False if the kernel is not a blocked convolution."""
    parts = _blocks(sch)
    if parts is None:
        return False
    pad, conv, epilogue = parts
    width = int(sch.get(sch.get_loops(conv)[3]).extent)
    limit = min(width, max_reg_n(sch, conv, unit))
    reg_n = next((r for r in range(limit, 1, -1) if width % r == 0 and r >= 4), min(limit, 6))
    _apply(sch, pad, conv, epilogue, reg_n, False)
    return True


def template_space(mod, unit: VectorUnit):
    """MetaSchedule's design-space function for a task's PrimFunc where a template schedules
    it (a blocked convolution here, a Winograd one in scripts/winograd.py), else None."""
    import functools

    import winograd

    if is_conv_kernel(mod):
        return functools.partial(conv_space, unit=unit)
    if winograd.is_winograd_kernel(mod):
        return functools.partial(winograd.winograd_space, unit=unit)
    return None


def schedule_kernel(sch, unit: VectorUnit) -> bool:
    """A template's fixed choices for a kernel without a tuning record (blocked or Winograd
    convolution); False for any other kernel."""
    import winograd

    return schedule_conv(sch, unit) or winograd.schedule_winograd(sch, unit)
