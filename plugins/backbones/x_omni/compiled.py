"""The one-token decoding step compiled with ``torch.compile`` at fixed shapes.

Each step writes its keys and values at a position given as a tensor and attends over the whole
:class:`~.cache.StaticKVCache` buffer (unfilled positions blocked by the cache's bias), so one
compiled graph serves every step of a generation. On CUDA the ``reduce-overhead`` mode also
captures the step as a CUDA graph. Graphs are specialised to their shapes: the first step of
each new batch size, mode and cache length compiles (the backbone rounds cache lengths up to
limit how many), which short runs do not repay, so it is opt-in. On the CPU it measured faster
than the eager step at batch 1 only (BENCHMARKS.md, "Image-token decoding").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from xomni_core import GenerationMode

from .cache import BufferWriter, StaticKVCache

if TYPE_CHECKING:
    from .model import XOmniForCausalLM


class CompiledDecodeStep:
    """``step(...)`` runs one new position after a :class:`StaticKVCache` through the compiled
    graph and returns the mode's float32 logits ``(batch, ids)``."""

    def __init__(self, net: XOmniForCausalLM, *, mode: str | None = None) -> None:
        self.net = net
        device_type = net.lm_head.weight.device.type
        compile_mode = mode or ("reduce-overhead" if device_type == "cuda" else "default")
        self._compiled: Any = torch.compile(
            self._fixed_step, mode=compile_mode, fullgraph=True, dynamic=False
        )

    def step(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cache: StaticKVCache,
        mode: GenerationMode,
    ) -> torch.Tensor:
        # Buffers that keep their address between steps, as CUDA graphs require.
        for buffer in (*cache.keys, *cache.values, cache.bias):
            torch._dynamo.mark_static_address(buffer)
        write_index = torch.tensor([cache.length], device=cache.bias.device)
        logits: torch.Tensor = self._compiled(
            input_ids, position_ids, write_index, cache.keys, cache.values, cache.bias, mode
        )
        return logits.clone()

    def _fixed_step(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        write_index: torch.Tensor,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        bias: torch.Tensor,
        mode: GenerationMode,
    ) -> torch.Tensor:
        hidden = self.net.model(input_ids, bias, position_ids, BufferWriter(keys, values, write_index))
        return self.net.mode_logits(hidden[:, -1], mode)
