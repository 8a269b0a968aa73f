"""The fixed-shape decode step (`StaticStep`) and its compiled form (`compiled_step`).

`StaticStep` runs one decode step with fixed shapes, sampling included, so that it can be captured in
a CUDA graph and compiled once for every cache length. `compiled_step(model)` compiles it:

    CUDA: autotuned kernels without inductor's own CUDA graphs (the engine captures the whole step).
    CPU:  inductor's C++ GEMM template (max-autotune, CPP backend) on frozen weights. At batch 1-16 a
          decode step is matrix-vector work bound by how fast the weights stream from memory, and the
          template on weights prepacked at compile time streams them far faster than the BLAS call
          behind eager F.linear (docs/decoding.md#performance measures the result).

Freezing makes the weights constants of the compiled graph, so a graph compiled before the weights
change would keep the old ones. Dynamo keeps compiled graphs per code object, so each model gets a
private copy of the step's code: its graphs are its own, and when its weights' fingerprint moved
(optimizer step, load_state_dict) the copy is replaced and compiles again. Nothing else compiled in
the process is touched (no `torch.compiler.reset()`); a copy's graphs are freed when it is replaced or
its model dies.
"""

from __future__ import annotations

import contextlib
import types
import warnings
import weakref

import torch

from llmlab.generate.sampling import BatchSampler
from llmlab.generate.streams import inverse_cdf
from llmlab.model.kv_cache import KVCache


def compile_failures() -> tuple[type[Exception], ...]:
    """Errors that mean "this could not be compiled": the step then runs eagerly. Anything else raised
    by a compiled call (a bad index, a device-side assert) is the step's own error and propagates."""
    import torch._dynamo  # slow to import (seconds): only once something is compiled

    exc = torch._dynamo.exc
    # inductor failed (e.g. no C++ compiler); dynamo failed; a graph break under fullgraph=True
    return (exc.BackendCompilerFailed, exc.InternalTorchDynamoError, exc.Unsupported)


def weights_fingerprint(model) -> tuple:
    """Changes whenever a weight is written in place (optimizer step, load_state_dict) or replaced."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


class CompiledStep:
    """`StaticStep._step` compiled for one model's current weights, from a private copy of its code.

    On CPU fullgraph=True: one graph on that private code object, none on shared code (a graph break
    would put frozen weights on `Transformer.forward`'s code, where another model could pick them up)."""

    def __init__(self, model, device: torch.device):
        self.frozen = device.type != "cuda"
        self.fingerprint = weights_fingerprint(model) if self.frozen else None
        self.failed = False
        fn = _private_copy(StaticStep._step)
        self.code = fn.__code__
        # Dynamo's cache on a code object is not freed with it: `release()` frees this step's graphs,
        # when it is replaced or else when its model dies.
        self.release = weakref.finalize(model, _reset_code, self.code)
        self.release.atexit = False  # nothing to free at exit
        if self.frozen:
            options = {"max_autotune": True, "max_autotune_gemm_backends": "CPP"}
            self.compiled = torch.compile(fn, fullgraph=True, options=options)
        else:
            self.compiled = torch.compile(fn, mode="max-autotune-no-cudagraphs")

    def __call__(self, step: StaticStep, keys: torch.Tensor, warm: bool):
        """Run the compiled step; compile on the first call, decode eagerly (with a warning) if that fails.

        warm: this step object ran before, so nothing its guards check can have changed (same model,
        batch, cache, weights) and evaluating them is skipped (measurable at batch 1)."""
        if self.failed:
            return step._step(keys)
        try:
            with self._context(warm):
                return self.compiled(step, keys)
        except compile_failures() as e:
            cause = getattr(e, "inner_exception", None) or e  # inductor's error, not dynamo's wrapper
            first = (str(cause).strip().splitlines() or [""])[0]
            warnings.warn(
                f"compiling the decode step failed ({type(cause).__name__}: {first[:200]}); decoding eagerly",
                stacklevel=3,
            )
            self.failed = True
            return step._step(keys)

    def _context(self, warm: bool):
        import torch._dynamo.config as dynamo_config

        stack = contextlib.ExitStack()
        # One graph per batch-size bucket, each with static row shapes (the engine pads to the bucket);
        # only the cache-length axis is symbolic, by explicit marks.
        stack.enter_context(dynamo_config.patch(automatic_dynamic_shapes=False))
        if not self.frozen:
            return stack
        import torch._inductor.config as inductor_config  # slow to import: only when compiling on CPU

        # `freezing` is read when the graph compiles, and torch.compile's options= does not pass it
        # through, hence the patch around each call.
        stack.enter_context(inductor_config.patch(freezing=True))
        stack.enter_context(torch.compiler.set_stance(skip_guard_eval_unsafe=warm))
        return stack


def _reset_code(code: types.CodeType) -> None:
    from torch._dynamo.eval_frame import reset_code

    reset_code(code)


def _private_copy(fn):
    """The same function with its own code object, hence its own cache of compiled graphs."""
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


# The compiled step of each live model's current weights (an entry dies with its model).
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_step(model, device: torch.device) -> CompiledStep:
    """The model's compiled step, shared by its engines; a new one when its frozen weights changed."""
    step = _COMPILED.get(model)
    if step is None or (step.frozen and step.fingerprint != weights_fingerprint(model)):
        if step is not None:
            step.release()  # the graphs of the old weights
        step = _COMPILED[model] = CompiledStep(model, device)
    return step


class StaticStep:
    """One decode step with fixed shapes, sampling included, for CUDA-graph capture (gpt-fast style),
    over the first `rows` cache slots (a batch-size bucket: the engine pads its running rows up to it).

    Inputs live in static buffers (tokens [B], pos [B]: each row's own write slot); the step writes the
    new keys/values at pos[b], attends over the whole cache (CUDA graph) or its filled part (otherwise)
    under the mask s ≤ pos[b], processes the logits with the processors its rows use (`uses`; a row with
    a neutral setting is unchanged by one, and the engine builds another step when rows need more) and
    picks the next token:
    the argmax for greedy rows, otherwise the inverse CDF of p at a uniform u (`sampling.inverse_cdf`,
    as the eager step). u is drawn outside the graph from each row's own stream (the sampler's
    `next_uniforms`), so rows stay seeded independently and sample what they would eagerly. With
    `graph=False` the same step runs without a CUDA graph (CPU, tests); `compiled` runs it compiled."""

    def __init__(
        self,
        model,
        sampler: BatchSampler,
        cache: KVCache,
        graph: bool,
        compiled: CompiledStep | None = None,
        uses: tuple = (False, True, True, True),
    ):
        B, S = cache.k[0].shape[0], cache.max_len
        dev = cache.k[0].device
        self.model, self.sampler, self.cache, self.rows = model, sampler, cache, B
        self.uses, self.all_greedy = uses, uses[0]  # the processors these rows need (BatchSampler.uses)
        self.last_position = model.cfg.context - 1
        self.tokens = torch.zeros(B, dtype=torch.long, device=dev)
        self.pos = torch.zeros(B, dtype=torch.long, device=dev)
        self.slots = torch.arange(S, device=dev)
        self.u = torch.full((B,), 0.5, dtype=torch.float64, device=dev)  # padding rows: any u in (0, 1)
        if compiled is not None and not graph:
            # One graph for every cache length: the slot axis is symbolic (the GEMMs' shapes do not
            # depend on it), so a new prompt or max_new_tokens does not compile again.
            for t in [*cache.k, *cache.v]:
                torch._dynamo.maybe_mark_dynamic(t, 2)
        self.compiled, self.warm = compiled, False
        self.graph = None
        self.want_graph = graph

    def _step(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keys: the cache slots to attend over, slots[:n]; the mask's width n tells the attention
        how much of the cache to read (all of it under a CUDA graph, the filled part otherwise)."""
        key_ok = keys[None] <= self.pos[:, None]  # [B, n]
        positions = self.pos.clamp(max=self.last_position)[:, None]  # padding rows sit at 0
        logits = self.model(
            self.tokens[:, None],
            positions=positions,
            attn_mask=key_ok[:, None, None, :],
            cache=self.cache,
            cache_pos=self.pos,
        )[:, -1]
        z = self.sampler.process(logits, uses=self.uses)
        if self.all_greedy:
            return logits, z.argmax(-1)
        drawn = inverse_cdf(z, self.u)
        nxt = torch.where(self.sampler.temperature[: self.rows, 0] > 0, drawn, z.argmax(-1))
        return logits, nxt

    def _run(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.compiled is None:
            return self._step(keys)
        out = self.compiled(self, keys, warm=self.warm)
        self.warm = True
        return out

    def _capture(self) -> None:
        """Warm up on a side stream (as CUDA graphs require), then record the step once."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run(self.slots)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out_logits, self.out_tokens = self._run(self.slots)

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens, pos: [R] for the R ≤ rows running rows (the rest of the bucket is padding)."""
        R = len(tokens)
        self.tokens.zero_()
        self.pos.zero_()
        self.tokens[:R] = tokens
        self.pos[:R] = pos
        if not self.all_greedy:
            self.u[:R] = self.sampler.next_uniforms(0, R)
        if not self.want_graph:
            keys = self.slots[: int(pos.max()) + 1]  # only the filled slots: less cache to read
            torch._dynamo.maybe_mark_dynamic(keys, 0)
            logits, nxt = self._run(keys)
            return logits[:R], nxt[:R]
        if self.graph is None:
            self._capture()  # the warm-up ran this very step, and the replay below repeats it exactly
        self.graph.replay()
        return self.out_logits[:R], self.out_tokens[:R].clone()


def bucket(n: int, cap: int) -> int:
    """The smallest power of two ≥ n, at most `cap`: the batch sizes a fixed-shape step is built for."""
    b = 1
    while b < n:
        b *= 2
    return min(b, cap)


def converted(model, dtype: torch.dtype):
    """A copy of `model` in `dtype` (e.g. bf16 decoding; the caller's model is left as it is)."""
    import copy

    return copy.deepcopy(model).to(dtype)
