"""The X-Omni unified autoregressive backbone, top to bottom.

A Qwen2 decoder over one id space: ids below ``vocab_size`` are text, id ``vocab_size + i`` is
row ``i`` of a second, multimodal embedding table (image token ``k`` is ``vocab_size + k``,
written ``<MM-Token-k>``; ``<SOM>``, ``<EOM>`` and ``<IMAGE>`` follow the image tokens).
A position is *multimodal* when its input id is. Such positions use the multimodal table, the
multimodal final norm, and are the only positions the first ``num_mm_adap_layers`` and last
``num_mm_head_layers`` decoder layers update. Text mode reads ``lm_head``; image mode reads the
image rows of ``mm_head``. Parameter names match the official checkpoint, so its state dict
loads one to one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import AutoTokenizer
from transformers.cache_utils import DynamicCache
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)

from xomni_core import (
    Backbone,
    BackboneStep,
    BackboneVocab,
    CheckpointError,
    ConfigError,
    GenerationMode,
    InputError,
    atomic_directory,
    check_state_dict,
    load_tensors,
    read_component_file,
    save_tensors,
    torch_dtype,
    write_component_file,
)
from xomni_core.text_tokenizers import build_byte_tokenizer, save_text_tokenizer

from .cache import StaticKVCache
from .compiled import CompiledDecodeStep
from .params import XOmniParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from typing_extensions import Self

    from xomni_export import GraphExport, Precision

PLUGIN_NAME = "x-omni"
WEIGHTS_FILE = "model.safetensors"
_OWNER = f"backbone plugin '{PLUGIN_NAME}'"

KVCache = DynamicCache | StaticKVCache
#: Cache lengths of compiled decoding are multiples of this.
CACHE_LENGTH_STEP = 256

#: Qwen2.5 chat markup, used when a tokenizer carries no chat template of its own.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def qwen2_config(params: XOmniParams) -> Qwen2Config:
    """The transformers config the Qwen2 building blocks read."""
    config = Qwen2Config(
        vocab_size=params.vocab_size,
        hidden_size=params.hidden_size,
        intermediate_size=params.intermediate_size,
        num_hidden_layers=params.num_hidden_layers,
        num_attention_heads=params.num_attention_heads,
        num_key_value_heads=params.num_key_value_heads,
        hidden_act=params.hidden_act,
        max_position_embeddings=params.max_position_embeddings,
        initializer_range=params.initializer_range,
        rms_norm_eps=params.rms_norm_eps,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": params.rope_theta},
        use_sliding_window=False,
    )
    config._attn_implementation = "sdpa"
    return config


def attention_bias(attention_mask: torch.Tensor, query_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive causal + padding mask ``(batch, 1, query_len, past + query_len)``.

    Blocked entries hold the dtype's lowest finite value rather than ``-inf``: a left-padding
    query blocked everywhere then gets uniform (finite) weights instead of NaNs that would leak
    into later layers through its keys and values.
    """
    kv_len = attention_mask.shape[1]
    device = attention_mask.device
    query_pos = torch.arange(kv_len - query_len, kv_len, device=device)[:, None]
    key_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = (key_pos <= query_pos)[None, None] & attention_mask[:, None, None, :].bool()
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


class XOmniModel(nn.Module):
    """Embeddings, decoder layers and final norms: the ``model.*`` weights."""

    def __init__(self, params: XOmniParams, config: Qwen2Config) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = params.vocab_size
        # padding_idx=-1 as in the official model: the last row of each table gets no gradient.
        self.lm_embed_tokens = nn.Embedding(params.vocab_size, params.hidden_size, padding_idx=-1)
        self.mm_embed_tokens = nn.Embedding(params.mm_vocab_size, params.hidden_size, padding_idx=-1)
        self.layers = nn.ModuleList(
            Qwen2DecoderLayer(config, index) for index in range(params.num_hidden_layers)
        )
        self.lm_norm = Qwen2RMSNorm(params.hidden_size, eps=params.rms_norm_eps)
        self.mm_norm = Qwen2RMSNorm(params.hidden_size, eps=params.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config=config)
        first_shared = params.num_mm_adap_layers
        first_head = params.num_hidden_layers - params.num_mm_head_layers
        self.vision_only = tuple(
            not first_shared <= index < first_head for index in range(params.num_hidden_layers)
        )
        self.gradient_checkpointing = False

    def reset_rotary(self) -> None:
        """Rebuild the RoPE frequencies in float32 on the weights' device.

        They are a non-persistent buffer: absent from checkpoints, left empty by meta-device
        construction, and rounded by a cast to a half-precision dtype.
        """
        device = self.lm_embed_tokens.weight.device
        self.rotary_emb = Qwen2RotaryEmbedding(config=self.config).to(device)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_bias: torch.Tensor,
        position_ids: torch.Tensor,
        cache: KVCache | None,
    ) -> torch.Tensor:
        """Final hidden states ``(batch, seq, hidden)``, each normed by its position's kind."""
        multimodal = (input_ids >= self.vocab_size)[..., None]
        text_embeds = self.lm_embed_tokens(input_ids.clamp(max=self.vocab_size - 1))
        mm_embeds = self.mm_embed_tokens((input_ids - self.vocab_size).clamp(min=0))
        hidden = torch.where(multimodal, mm_embeds, text_embeds)

        position_embeddings = self.rotary_emb(hidden, position_ids)
        checkpointed = self.gradient_checkpointing and cache is None and torch.is_grad_enabled()
        for layer, vision_only in zip(self.layers, self.vision_only, strict=True):
            if checkpointed:
                # Only the layer's input is kept; the backward pass runs the layer again.
                output = checkpoint(
                    layer,
                    hidden,
                    attention_mask=attention_bias,
                    position_ids=position_ids,
                    position_embeddings=position_embeddings,
                    use_reentrant=False,
                )
            else:
                output = layer(
                    hidden,
                    attention_mask=attention_bias,
                    position_ids=position_ids,
                    cache=cache,
                    use_cache=cache is not None,
                    position_embeddings=position_embeddings,
                )
            # A vision-specific layer attends over (and caches keys/values of) every position,
            # but text positions keep their input.
            hidden = torch.where(multimodal, output, hidden) if vision_only else output

        return torch.where(multimodal, self.mm_norm(hidden), self.lm_norm(hidden))


class XOmniForCausalLM(nn.Module):
    """The backbone network: :class:`XOmniModel` plus ``lm_head`` and ``mm_head``."""

    def __init__(self, params: XOmniParams) -> None:
        super().__init__()
        self.params = params
        self.model = XOmniModel(params, qwen2_config(params))
        self.lm_head = nn.Linear(params.hidden_size, params.vocab_size, bias=False)
        self.mm_head = nn.Linear(params.hidden_size, params.mm_vocab_size, bias=False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mode: GenerationMode = "text",
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Float32 logits ``(batch, seq, vocab_size + mm_vocab_size)`` restricted by ``mode``.

        ``logits_to_keep > 0`` computes logits for that many last positions only (a 5,184-token
        prefill would otherwise materialise gigabytes of logits).
        """
        hidden = self.hidden_states(input_ids, attention_mask, position_ids, cache)
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        return self.restricted_logits(hidden, mode)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        """Final normed hidden states ``(batch, seq, hidden)`` after ``cache``.

        ``attention_mask`` covers cached and new positions (0 for padding); without
        ``position_ids`` positions count the unmasked tokens.
        """
        batch, seq_len = input_ids.shape
        past_len = cache.get_seq_length() if cache is not None else 0
        if attention_mask is None:
            attention_mask = input_ids.new_ones((batch, past_len + seq_len))
        if attention_mask.shape != (batch, past_len + seq_len):
            raise InputError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                f"(batch, past + seq) = ({batch}, {past_len + seq_len})"
            )
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_len:]
        dtype = self.lm_head.weight.dtype
        if not isinstance(cache, StaticKVCache):
            return self.model(input_ids, attention_bias(attention_mask, seq_len, dtype), position_ids, cache)
        cache.begin_step(attention_mask)
        if seq_len == 1 and past_len > 0:
            bias = cache.step_bias()
        else:
            bias = attention_bias(attention_mask, seq_len, dtype)
        hidden = self.model(input_ids, bias, position_ids, cache)
        cache.advance(seq_len)
        return hidden

    def mode_logits(self, hidden: torch.Tensor, mode: GenerationMode) -> torch.Tensor:
        """Float32 logits over the ids ``mode`` can emit only: ``lm_head`` in text mode, the
        image rows of ``mm_head`` in image mode."""
        return self._head(hidden, mode).float()

    def restricted_logits(self, hidden: torch.Tensor, mode: GenerationMode) -> torch.Tensor:
        """Logits over the whole id space; ids outside ``mode``'s range get the lowest value."""
        p = self.params
        head = self._head(hidden, mode)
        # Filled in the compute dtype and only then widened: the "lowest value" is the compute
        # dtype's (bfloat16's for the released model), as in the official implementation.
        logits = hidden.new_full((*hidden.shape[:-1], p.total_vocab_size), torch.finfo(hidden.dtype).min)
        start = 0 if mode == "text" else p.vocab_size
        logits[..., start : start + head.shape[-1]] = head
        return logits.float()

    def _head(self, hidden: torch.Tensor, mode: GenerationMode) -> torch.Tensor:
        if mode == "text":
            return self.lm_head(hidden)
        if mode == "image":
            if type(self.mm_head) is not nn.Linear:
                # A head wrapped by an adapter (LoRA) adds its update only when called whole.
                return self.mm_head(hidden)[..., : self.params.image_vocab_size]
            return F.linear(hidden, self.mm_head.weight[: self.params.image_vocab_size])
        raise InputError(f"generation mode must be 'text' or 'image', got {mode!r}")


def init_weights(net: XOmniForCausalLM, *, seed: int) -> None:
    """Qwen2-style initialisation from a private generator: normal(0, initializer_range)
    matrices and embeddings (padding rows zero), zero biases, unit norms."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    std = net.params.initializer_range

    def normal(tensor: torch.Tensor) -> None:
        values = torch.empty(tensor.shape, dtype=torch.float32).normal_(0.0, std, generator=generator)
        tensor.copy_(values)

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Linear):
                normal(module.weight)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                normal(module.weight)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, Qwen2RMSNorm):
                module.weight.fill_(1.0)


def build_tokenizer(params: XOmniParams) -> PreTrainedTokenizerBase:
    """A byte-level text tokenizer laid out for ``params``'s id space.

    Ids 0-255 are bytes, then eos, pad and ``<|im_start|>``; ``<|reserved_i|>`` placeholders take
    the text ids up to ``vocab_size`` (so ``vocab_size`` must be at least 259). Then come the
    image tokens (``<MM-Token-k>`` at ``vocab_size + k``) and ``<SOM>``, ``<EOM>``, ``<IMAGE>``.
    Placeholders live in the vocabulary and the multimodal tokens are special only in
    ``tokenizer.json``, so that a saved tokenizer of the real id space loads in seconds.
    """
    text_specials = ["<|im_start|>"]
    text_ids = 256 + 2 + len(text_specials)
    if params.vocab_size < text_ids:
        raise ConfigError(
            f"vocab_size={params.vocab_size} is too small for the byte-level tokenizer of a "
            f"randomly initialised backbone: it needs at least {text_ids} text ids "
            "(256 bytes, pad, eos, <|im_start|>)"
        )
    image = [params.image_token(k) for k in range(params.image_vocab_size)]
    tokenizer = build_byte_tokenizer(
        text_specials,
        placeholders=params.vocab_size - text_ids,
        bulk_special_tokens=[*image, *params.mm_special_tokens],
        pad_token=params.pad_token,
        eos_token=params.eos_token,
        model_max_length=params.max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def resolve_vocab(params: XOmniParams, tokenizer: PreTrainedTokenizerBase) -> BackboneVocab:
    """The id layout of ``tokenizer``, checked against what the network expects."""
    problems = []
    if len(tokenizer) > params.total_vocab_size:
        problems.append(
            f"it has {len(tokenizer)} tokens, more than the {params.total_vocab_size} ids the network embeds"
        )

    def token_id(token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(found, int) or tokenizer.convert_ids_to_tokens(found) != token:
            problems.append(f"it lacks the token {token!r}")
            return -1
        return found

    som_id, eom_id, image_id = (token_id(t) for t in params.mm_special_tokens)
    eos_id, pad_id = token_id(params.eos_token), token_id(params.pad_token)
    names = [params.image_token(k) for k in range(params.image_vocab_size)]
    image_ids = cast(list[int], tokenizer.convert_tokens_to_ids(names))
    expected = range(params.vocab_size, params.vocab_size + params.image_vocab_size)
    wrong = [(n, i, e) for n, i, e in zip(names, image_ids, expected, strict=True) if i != e]
    if wrong:
        name, found, want = wrong[0]
        problems.append(
            f"{len(wrong)} image tokens are not at vocab_size + k, e.g. {name} has id {found}, "
            f"expected {want}"
        )
    if problems:
        raise CheckpointError(
            f"{_OWNER}: the text tokenizer does not fit the network: " + "; ".join(problems)
        )
    return BackboneVocab(
        text_vocab_size=params.vocab_size,
        image_vocab_size=params.image_vocab_size,
        total_vocab_size=params.total_vocab_size,
        image_token_offset=params.vocab_size,
        som_id=som_id,
        eom_id=eom_id,
        image_id=image_id,
        eos_id=eos_id,
        pad_id=pad_id,
        max_positions=params.max_position_embeddings,
    )


class XOmniBackbone(Backbone[XOmniParams]):
    """X-Omni's unified backbone with its text tokenizer.

    The folder written by :meth:`save_pretrained` holds ``xomni_component.json``,
    ``model.safetensors`` (official parameter names) and the tokenizer's own files.
    """

    params_class = XOmniParams

    def __init__(
        self, params: XOmniParams, net: XOmniForCausalLM, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        super().__init__(params)
        self.net = net.eval()
        self.tokenizer = tokenizer
        self._vocab = resolve_vocab(params, tokenizer)
        self._compiled_step: CompiledDecodeStep | None = None

    # --- construction and saving ---

    @classmethod
    def from_params(cls, params: XOmniParams, *, seed: int = 0) -> Self:
        """Random weights (reproducible for ``seed``) and a byte-level tokenizer; see
        :func:`build_tokenizer` for the id layout and the minimum ``vocab_size``."""
        tokenizer = build_tokenizer(params)
        with torch.device("meta"):
            net = XOmniForCausalLM(params)
        net.to_empty(device="cpu")
        net.model.reset_rotary()
        init_weights(net, seed=seed)
        return cls(params, net, tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Self:
        """Load a folder written by :meth:`save_pretrained`; weights keep their stored dtype."""
        params = cast(
            XOmniParams,
            read_component_file(path, kind="backbone", plugin=PLUGIN_NAME, params_class=XOmniParams),
        )
        weights = Path(path, WEIGHTS_FILE)
        tensors = load_tensors(weights)
        with torch.device("meta"):
            net = XOmniForCausalLM(params)
        check_state_dict(net.state_dict(), tensors, source=str(weights), owner=_OWNER)
        net.load_state_dict(tensors, strict=True, assign=True)
        net.model.reset_rotary()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{_OWNER}: cannot load the text tokenizer from {path}: {exc}") from exc
        return cls(params, net, tokenizer)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        with atomic_directory(path) as folder:
            write_component_file(folder, kind="backbone", plugin=PLUGIN_NAME, params=self.params)
            save_tensors(self.net.state_dict(), folder / WEIGHTS_FILE)
            save_text_tokenizer(self.tokenizer, folder)

    def to(self, device: str | None = None, dtype: str | None = None) -> Self:
        self.net.to(device=device, dtype=torch_dtype(dtype) if dtype else None)
        self.net.model.reset_rotary()
        return self

    @property
    def device(self) -> torch.device:
        return self.net.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.lm_head.weight.dtype

    # --- text ---

    @property
    def vocab(self) -> BackboneVocab:
        return self._vocab

    def tokenize(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def detokenize(self, ids: Sequence[int]) -> str:
        text_ids = [int(i) for i in ids if int(i) < self.params.vocab_size]
        return cast(str, self.tokenizer.decode(text_ids, skip_special_tokens=True))

    def chat_prompt(self, user_turn: str) -> str:
        """One user turn in the tokenizer's chat template, opening the assistant's answer."""
        if not getattr(self.tokenizer, "chat_template", None):
            return f"<|im_start|>user\n{user_turn}<|im_end|>\n<|im_start|>assistant\n"
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_turn}], tokenize=False, add_generation_prompt=True
        )
        return str(prompt)

    def image_prefix(self, grid_h: int, grid_w: int) -> str:
        som, _, image = self.params.mm_special_tokens
        return f"{som}{grid_h} {grid_w}{image}"

    # --- forward ---

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        mode: GenerationMode = "text",
    ) -> torch.Tensor:
        """Float32 logits for every position of whole sequences, without a cache."""
        device = self.device
        logits: torch.Tensor = self.net(
            input_ids.to(device),
            None if attention_mask is None else attention_mask.to(device),
            None if position_ids is None else position_ids.to(device),
            None,
            mode,
        )
        return logits

    def new_cache(self, batch_size: int, max_length: int) -> StaticKVCache:
        """Preallocated keys and values for ``max_length`` positions (see :class:`StaticKVCache`)."""
        p = self.params
        if self._compiled_step is not None:
            # The compiled step specialises on the cache's length: round it up so that prompts
            # of nearby lengths share one compiled graph.
            max_length = min(
                -(-max_length // CACHE_LENGTH_STEP) * CACHE_LENGTH_STEP, p.max_position_embeddings
            )
        return StaticKVCache(
            num_layers=p.num_hidden_layers,
            batch_size=batch_size,
            num_kv_heads=p.num_key_value_heads,
            head_dim=p.head_dim,
            max_length=max_length,
            dtype=self.dtype,
            device=self.device,
        )

    def forward_step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: Any | None,
        mode: GenerationMode,
    ) -> BackboneStep:
        cache = past if past is not None else DynamicCache()
        if not isinstance(cache, DynamicCache | StaticKVCache):
            raise InputError(
                f"past must be the cache a previous forward_step returned, got {type(past).__name__}"
            )
        device = self.device
        input_ids, attention_mask, position_ids = (
            t.to(device) for t in (input_ids, attention_mask, position_ids)
        )
        compiled = self._compiled_step
        if (
            compiled is not None
            and isinstance(cache, StaticKVCache)
            and cache.length > 0
            and input_ids.shape[1] == 1
        ):
            cache.begin_step(attention_mask)
            logits = compiled.step(input_ids, position_ids, cache, mode)
            cache.advance(1)
            return BackboneStep(logits=logits, past=cache)
        hidden = self.net.hidden_states(input_ids, attention_mask, position_ids, cache)
        return BackboneStep(logits=self.net.mode_logits(hidden[:, -1], mode), past=cache)

    def compile_decoding(self, mode: str | None = None) -> None:
        """Run one-token steps after a preallocated cache through ``torch.compile`` (see
        :class:`CompiledDecodeStep`); ``mode`` is torch.compile's (default: ``reduce-overhead``
        on CUDA, which captures CUDA graphs, else ``default``)."""
        self._compiled_step = CompiledDecodeStep(self.net, mode=mode)

    # --- training ---

    def trainable_module(self) -> nn.Module:
        """The whole network, :class:`XOmniForCausalLM`."""
        return self.net

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each decoder layer in the backward pass instead of keeping its activations."""
        self.net.model.gradient_checkpointing = True

    @classmethod
    def meta_module(cls, params: XOmniParams) -> nn.Module:
        """The trainable module's layout without weights (build it under ``torch.device("meta")``),
        for memory estimates."""
        return XOmniForCausalLM(params)

    def module_aliases(self) -> dict[str, str]:
        """See :meth:`module_aliases_for`."""
        return self.module_aliases_for(self.params)

    @staticmethod
    def module_aliases_for(p: XOmniParams) -> dict[str, str]:
        """Names by which ``training.lora.target_modules`` can address the decoder layers by kind:
        ``model.layers.I`` is also ``mm_adap_layers.I`` (the first ``num_mm_adap_layers``),
        ``shared_layers.I`` (the shared language layers) or ``mm_head_layers.I`` (the last
        ``num_mm_head_layers``), with I the layer's index among all layers."""
        first_head = p.num_hidden_layers - p.num_mm_head_layers
        aliases = {}
        for index in range(p.num_hidden_layers):
            if index < p.num_mm_adap_layers:
                group = "mm_adap_layers"
            elif index >= first_head:
                group = "mm_head_layers"
            else:
                group = "shared_layers"
            aliases[f"model.layers.{index}"] = f"{group}.{index}"
        return aliases

    def sequence_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        mode: GenerationMode,
        *,
        logits_to_keep: int = 0,
        module: nn.Module | None = None,
    ) -> torch.Tensor:
        """Float32 logits for whole sequences through ``module`` (default: :attr:`net`)."""
        net = self.net if module is None else module
        device = self.device
        logits: torch.Tensor = net(
            input_ids.to(device),
            attention_mask.to(device),
            position_ids.to(device),
            None,
            mode,
            logits_to_keep,
        )
        return logits

    # --- export ---

    def export_graphs(self, precision: Precision) -> list[GraphExport]:
        """The ``prefill`` and ``decode`` graphs of the backbone export spec; see :mod:`.export`."""
        from .export import export_graphs

        return export_graphs(self, precision)

    def write_export_assets(self, folder: Path) -> None:
        """The tokenizer files and ``backbone_runtime.json`` that the exported runtime reads."""
        from .export import write_export_assets

        write_export_assets(self, folder)
