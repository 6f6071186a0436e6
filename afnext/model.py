"""AudioLanguageModel: encoder + time embedding + connector + LLM.

The data path (DESIGN.md): 30 s windows of log-mel -> encoder frames ``(W, T, D_enc)`` -> rotary time
embedding -> connector tokens ``(W, T', D_llm)`` -> the valid tokens of every window, in order, replace the
``<sound>`` slots of the prompt (masked scatter, as transformers' AF3 / Music Flamingo do) -> LLM.

``forward`` and ``generate`` take the input names of transformers' ``AudioFlamingo3ForConditionalGeneration``
and ``MusicFlamingoForConditionalGeneration`` (``input_ids``, ``attention_mask``, ``input_features`` one
``(128, 3000)`` log-mel per 30 s window, ``input_features_mask``, ``labels``), so either can stand in for
the other in a pipeline.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from afnext.encoders.base import encoder_output_lengths
from afnext.errors import ConfigError, InputError
from afnext.interop.components import COMPONENTS
from afnext.specs import record_spec, recorded_spec, spec_from_partial

__all__ = ["LOSS_IMPLS", "PARTS", "AudioLanguageModel"]

PARTS = (*COMPONENTS, "lora")
"""What can train: the components, and ``lora`` (the LLM's adapter weights; ``llm`` is then the rest)."""
LOSS_IMPLS = ("fused", "naive")


def _finish(component: Any, optional: dict[str, Any] | None = None, **neighbour_sizes: Any) -> Any:
    """Build a Hydra partial (or any factory) with sizes taken from its neighbours; pass modules through.

    ``optional`` facts are passed only to factories that take them (a plugin's may not).
    """
    if component is None or isinstance(component, nn.Module):
        return component
    if callable(component):
        extra = {k: v for k, v in (optional or {}).items() if _takes(component, k)}
        built = component(**neighbour_sizes, **extra)
        spec = spec_from_partial(component, **neighbour_sizes, **extra)
        if spec is not None and recorded_spec(built) is None:
            record_spec(built, spec)  # a plugin's partial: what the checkpoint rebuilds it from
        return built
    raise ConfigError(f"expected a module or a partial, got {type(component).__name__}")


def _check_components(encoder: Any, time_embedding: Any, connector: Any, llm: Any) -> None:
    """Each component has every member of its kind's protocol (the error names what is missing)."""
    from afnext.connectors.base import Connector, TimeEmbedding
    from afnext.encoders.base import AudioEncoder
    from afnext.llms.base import CausalLM
    from afnext.specs import check_protocol

    check_protocol("encoder", encoder, AudioEncoder, "afnext/encoders/base.py")
    if time_embedding is not None:
        check_protocol("time_embedding", time_embedding, TimeEmbedding, "afnext/connectors/base.py")
    check_protocol("connector", connector, Connector, "afnext/connectors/base.py")
    check_protocol("llm", llm, CausalLM, "afnext/llms/base.py")


def _takes(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` accepts the keyword ``name`` (explicitly or through ``**kwargs``)."""
    import functools

    from afnext.specs import init_signature

    func = factory.func if isinstance(factory, functools.partial) else factory
    try:  # a class's own __init__ (afnext's classes have a metaclass whose __call__ takes anything)
        params = (
            init_signature(func) if inspect.isclass(func) else inspect.signature(func)
        ).parameters
    except (TypeError, ValueError):  # no signature to read: do not guess
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class AudioLanguageModel(nn.Module):
    """An audio-language model assembled from swappable parts.

    Args:
        encoder: An :class:`afnext.encoders.base.AudioEncoder` module.
        connector: A connector module (``in_dim`` = encoder ``out_dim``, ``out_dim`` = LLM hidden size).
        llm: An :class:`afnext.llms.hf.HFCausalLM`.
        time_embedding: ``None`` or a time embedding (:class:`afnext.connectors.rote.RotaryTimeEmbedding`).
        audio_boundary_tokens: Wrap each audio's tokens in ``<|sound_bos|>`` ... ``<|sound_eos|>`` (AF-Next,
            Music Flamingo) or not (AF3). Used by the processor.
        trainable: Parts that train: any of ``encoder``, ``connector``, ``llm``, ``lora``.
        loss_impl: How ``forward`` computes the loss when given ``labels``: ``fused`` (the next-token loss from
            the final hidden states with ``afnext_kernels.linear_cross_entropy``, never building the
            ``(tokens, vocabulary)`` logits; ``logits`` is then None) or ``naive`` (the LLM's own loss over the
            full logits, which it returns).
    """

    def __init__(
        self,
        encoder: nn.Module,
        connector: nn.Module,
        llm: nn.Module,
        time_embedding: nn.Module | None = None,
        *,
        audio_boundary_tokens: bool = True,
        trainable: Sequence[str] = ("encoder", "connector", "llm"),
        loss_impl: str = "fused",
    ) -> None:
        super().__init__()
        _check_components(encoder, time_embedding, connector, llm)
        self.loss_impl = loss_impl
        # The ranks that share one sequence (set by the training strategy; see afnext.llms.sequence_parallel).
        self.sequence_group: Any = None
        self.encoder = encoder
        self.time_embedding = time_embedding
        self.connector = connector
        self.llm = llm
        self.audio_boundary_tokens = audio_boundary_tokens
        enc_dim = getattr(encoder, "out_dim", None)
        if getattr(connector, "in_dim", enc_dim) != enc_dim:
            raise ConfigError(
                f"connector.in_dim={connector.in_dim} but encoder.out_dim={enc_dim}; leave connector "
                "sizes unset so the builder takes them from the neighbours"
            )
        if getattr(connector, "out_dim", None) != llm.hidden_size:
            raise ConfigError(
                f"connector.out_dim={getattr(connector, 'out_dim', None)} but the LLM's hidden size is "
                f"{llm.hidden_size}; leave connector sizes unset so the builder takes them from the LLM"
            )
        ids = llm.special_ids
        self.audio_token_id = ids["audio"]
        self.audio_bos_token_id = ids["audio_bos"]
        self.audio_eos_token_id = ids["audio_eos"]
        # Parameters a component freezes by construction (Whisper's sinusoidal positions) stay frozen.
        self._fixed = {
            f"{part}.{n}"
            for part in COMPONENTS
            if part != "llm"
            if getattr(self, part) is not None
            for n, p in getattr(self, part).named_parameters()
            if not p.requires_grad
        }
        self.trainable: tuple[str, ...] = ()
        self.set_trainable(trainable)

    @property
    def loss_impl(self) -> str:
        """``fused`` or ``naive`` (see the class docstring)."""
        return self._loss_impl

    @loss_impl.setter
    def loss_impl(self, value: str) -> None:
        if value not in LOSS_IMPLS:
            raise ConfigError(f"model.loss_impl={value!r}; choose one of {LOSS_IMPLS}")
        self._loss_impl = value

    @classmethod
    def build(
        cls,
        encoder: nn.Module,
        connector: nn.Module | Callable[..., nn.Module],
        llm: nn.Module,
        time_embedding: nn.Module | Callable[..., nn.Module] | None = None,
        **kwargs: Any,
    ) -> AudioLanguageModel:
        """Finish the partial neighbours from the built ones, then assemble.

        The connector gets ``in_dim`` from the encoder and ``out_dim`` from the LLM; the time embedding gets
        ``dim`` and ``frame_rate`` from the encoder (and its ``window_seconds``, if it takes that). Sizes are
        never typed twice.
        """
        time_embedding = _finish(
            time_embedding,
            {"window_seconds": getattr(encoder, "window_seconds", None)},
            dim=encoder.out_dim,
            frame_rate=encoder.frame_rate,
        )
        connector = _finish(connector, in_dim=encoder.out_dim, out_dim=llm.hidden_size)
        return cls(encoder, connector, llm, time_embedding, **kwargs)

    # ----------------------------------------------------------------------------------------------
    # What trains
    # ----------------------------------------------------------------------------------------------
    def part_parameters(self, part: str) -> list[tuple[str, nn.Parameter]]:
        """Named parameters of one part (``lora`` = the LLM's adapter weights, ``llm`` = the rest)."""
        if part not in PARTS:
            raise ConfigError(f"unknown model part {part!r}; parts are {PARTS}")
        if part in ("llm", "lora"):
            named = [(f"llm.{n}", p) for n, p in self.llm.named_parameters()]
            is_lora = [("lora_" in n) for n, _ in named]
            return [np for np, lo in zip(named, is_lora) if lo == (part == "lora")]
        module = getattr(self, part)
        return [] if module is None else [(f"{part}.{n}", p) for n, p in module.named_parameters()]

    def set_trainable(self, parts: Sequence[str]) -> None:
        """Declare which parts train; every other parameter is frozen.

        Raises:
            ConfigError: An unknown part, ``lora`` without LoRA adapters, or both ``llm`` and ``lora``.
        """
        parts = tuple(parts)
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ConfigError(f"trainable lists unknown parts {unknown}; choose from {PARTS}")
        if "lora" in parts and not getattr(self.llm, "has_lora", False):
            raise ConfigError("trainable lists 'lora' but the LLM has no adapters: set llm.lora")
        if "lora" in parts and "llm" in parts:
            raise ConfigError(
                "trainable lists both 'llm' and 'lora'; train the full LLM or its adapters"
            )
        for part in PARTS:
            for name, param in self.part_parameters(part):
                param.requires_grad_(part in parts and name not in self._fixed)
        self.trainable = parts

    def part_classes(self) -> dict[str, str]:
        """The class of each part (``none`` for an absent one), and ``all``: the model's, for summaries."""
        classes = {}
        for part in COMPONENTS:
            module = getattr(self, part)
            name = "none" if module is None else type(module).__name__
            base = getattr(module, "base", None) if part == "llm" else None
            classes[part] = f"{name}({type(base).__name__})" if base is not None else name
        classes["lora"] = "peft LoRA" if getattr(self.llm, "has_lora", False) else "none"
        classes["all"] = type(self).__name__
        return classes

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        """``{part: {"total": n, "trainable": n}}`` plus an ``all`` row."""
        counts: dict[str, dict[str, int]] = {}
        for part in PARTS:
            params = [p for _, p in self.part_parameters(part)]
            counts[part] = {
                "total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
            }
        counts["all"] = {k: sum(v[k] for v in counts.values()) for k in ("total", "trainable")}
        return counts

    # ----------------------------------------------------------------------------------------------
    # Audio
    # ----------------------------------------------------------------------------------------------
    def audio_tokens_for_frames(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        """LLM tokens each window yields from its count of valid input frames.

        Args:
            frame_lengths: ``(W,)`` valid log-mel frames (or samples, for waveform encoders).

        Returns:
            ``(W,)`` int64.
        """
        enc = encoder_output_lengths(self.encoder, frame_lengths)
        return self.connector.output_lengths(enc).to(torch.long)

    def _window_index(
        self, input_ids: torch.Tensor | None, window_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Index of each window within its own audio, from the runs of ``<sound>`` slots in ``input_ids``.

        Follows transformers' ``MusicFlamingoModel._build_audio_timestamps``: each maximal run of audio
        slots is one audio; windows are assigned to audios in order by their token counts. A window that yields
        no token (the last window of an audio that ends at most 20 ms into it) belongs to the audio of the window
        before it: windows fill each audio in order, so only an audio's last window can be empty. (transformers
        counts it towards the next audio, or fails when it is the last.)
        """
        n_windows = window_tokens.shape[0]
        if input_ids is None:
            raise InputError(
                "the time embedding needs input_ids to tell which windows belong to which audio"
            )
        slots = (input_ids == self.audio_token_id).to(torch.int8)
        edges = torch.diff(nn.functional.pad(slots, (1, 1)), dim=1)
        starts = torch.nonzero(edges == 1)[:, 1]
        ends = torch.nonzero(edges == -1)[:, 1]
        audio_lengths = (ends - starts).to(torch.long)  # (A,) in row-major order
        win_start = (
            torch.cumsum(window_tokens, 0) - window_tokens
        )  # (W,) first token of each window
        # An empty window is looked up by the token before it, so it joins the previous window's audio.
        key = win_start - (window_tokens == 0).to(win_start.dtype)
        audio_end = torch.cumsum(audio_lengths, 0)
        owner = torch.searchsorted(audio_end, key, right=True)  # (W,) audio of each window
        if n_windows and int(owner.max()) >= audio_lengths.numel():
            raise InputError(
                f"the audio yields {int(window_tokens.sum())} tokens but the prompt has "
                f"{int(audio_lengths.sum())} <sound> slots"
            )
        first_window = torch.searchsorted(
            owner, torch.arange(audio_lengths.numel(), device=owner.device)
        )
        return torch.arange(n_windows, device=owner.device) - first_window[owner]

    def encode_audio(
        self,
        input_features: torch.Tensor,
        input_features_mask: torch.Tensor,
        input_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Audio windows -> the LLM-width tokens that fill the ``<sound>`` slots, in order.

        Args:
            input_features: ``(W, n_mels, frames)`` (or ``(W, 1, samples)`` for waveform encoders).
            input_features_mask: ``(W, frames)`` 1 for real frames.
            input_ids: ``(B, L)`` prompt ids; needed by the time embedding to find each window's audio.

        Returns:
            ``(N, D_llm)`` with ``N`` the total valid tokens of all windows.
        """
        param = next(self.encoder.parameters(), None)
        if param is not None:
            input_features = input_features.to(device=param.device, dtype=param.dtype)
        input_features_mask = input_features_mask.to(input_features.device)
        if self.sequence_group is not None:
            # Windows are independent: each rank of the group encodes its share, then all see all of them.
            from afnext.llms.sequence_parallel import gather_windows, spread_windows

            share, share_mask, total = spread_windows(
                input_features, input_features_mask, self.sequence_group
            )
            hidden, mask = self.encoder(share, share_mask)
            hidden, mask = gather_windows(hidden, mask, total, self.sequence_group)
        else:
            hidden, mask = self.encoder(input_features, input_features_mask)
        if self.time_embedding is not None:
            window_tokens = self.connector.output_lengths(mask.to(torch.long).sum(-1))
            window_index = self._window_index(input_ids, window_tokens.to(torch.long))
            hidden = self.time_embedding(hidden, window_index)
        tokens, token_mask = self.connector(hidden, mask)
        return tokens[token_mask]  # (N, D_llm)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the audio tokens spliced into the ``<sound>`` slots.

        Raises:
            InputError: Audio without ``<sound>`` slots, slots without audio, or counts that differ.
        """
        embeds = self.llm.embed(input_ids)  # (B, L, D)
        slots = input_ids == self.audio_token_id
        n_slots = int(slots.sum())
        if input_features is None:
            if n_slots:
                raise InputError(
                    f"input_ids hold {n_slots} <sound> slots but no audio was given "
                    "(input_features is None); pass the audio or remove the <sound> tokens"
                )
            return embeds
        if input_features_mask is None:
            raise InputError("input_features given without input_features_mask (W, frames)")
        if n_slots == 0:
            raise InputError(
                f"audio was given ({input_features.shape[0]} windows) but the prompt has no <sound> slot; "
                "put <sound> where the audio goes (the processor expands it to the right count)"
            )
        audio = self.encode_audio(input_features, input_features_mask, input_ids)
        if audio.shape[0] != n_slots:
            raise InputError(
                f"the prompt has {n_slots} <sound> slots but the audio yields {audio.shape[0]} tokens; "
                "build inputs with afnext's processor (N slots per audio from its true length)"
            )
        mask = slots.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, audio.to(embeds.dtype))

    # ----------------------------------------------------------------------------------------------
    # Forward and generate
    # ----------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        num_items_in_batch: int | float | torch.Tensor | None = None,
        idle_audio: bool = False,
        return_row_losses: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run the model; returns transformers' ``CausalLMOutputWithPast`` (``loss`` when ``labels``).

        With ``labels`` and ``loss_impl="fused"`` the loss comes from the final hidden states
        (:func:`afnext.llms.loss.next_token_loss`) and ``logits`` is None; otherwise the LLM computes the logits
        (and its own loss).

        Packed rows (``position_ids`` restarting at 0 at each sample, no padding mask or all ones, as afnext's
        collator makes with ``data.pack=true``) keep their samples apart under every attention back end that can
        (:mod:`afnext.llms.packing`); any other back end refuses them.

        Args:
            input_ids: ``(B, L)`` token ids with ``<sound>`` slots.
            attention_mask: ``(B, L)`` 1 for real tokens.
            input_features: ``(W, 128, 3000)`` log-mel, one row per 30 s window of every audio in order.
            input_features_mask: ``(W, 3000)`` 1 for real frames.
            labels: ``(B, L)`` next-token targets, -100 where ignored (the processor labels assistant turns).
            inputs_embeds: Precomputed embeddings instead of ``input_ids`` (no audio splicing then).
            position_ids: ``(B, L)`` positions (restarting per sample in packed rows).
            num_items_in_batch: Divide the summed loss by this instead of averaging over this batch's targets
                (transformers' convention for gradient accumulation).
            idle_audio: When the batch has no audio, still run the audio path on one silent window and add 0
                times its output to the loss, so that every data-parallel rank runs the same modules in the
                same order (DDP needs a gradient for every trainable parameter; FSDP2 all-gathers each layer).
            return_row_losses: Also return ``row_loss_sums`` ``(B,)`` (each row's summed token losses) and
                ``row_targets`` ``(B,)`` (its target tokens), for per-sample validation metrics.
            **kwargs: Passed to the LLM (cache, ``use_cache``, ``logits_to_keep``, ...).
        """
        from afnext.llms.packing import packed_attention_kwargs

        if inputs_embeds is None:
            if input_ids is None:
                raise InputError("forward needs input_ids or inputs_embeds")
            inputs_embeds = self.embed_inputs(input_ids, input_features, input_features_mask)
        elif input_features is not None:
            raise InputError(
                "give input_ids (with <sound> slots) together with input_features, not inputs_embeds"
            )
        idle = self.idle_audio_term() if idle_audio and input_features is None else None
        if self.sequence_group is not None and labels is not None:
            out = self._forward_sequence_parallel(
                inputs_embeds,
                attention_mask,
                position_ids,
                labels,
                num_items_in_batch,
                return_row_losses,
            )
            if idle is not None:
                out.loss = out.loss + idle
            return out
        attention_mask, packing = packed_attention_kwargs(
            self.llm.active_attn_implementation,
            position_ids,
            attention_mask,
            has_cache=kwargs.get("past_key_values") is not None,
        )
        kwargs = {**packing, **kwargs}
        if labels is not None:
            kwargs.setdefault(
                "use_cache", False
            )  # training: no cache (and transformers' packed masks need none)
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        from afnext.llms.loss import IGNORE_INDEX, next_token_loss, shift_labels

        if labels is None or self.loss_impl == "naive":
            if labels is not None and num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            out = self.llm(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
            )
            if labels is not None and return_row_losses:
                targets = shift_labels(labels.to(out.logits.device))
                per_token = nn.functional.cross_entropy(
                    out.logits.float().transpose(1, 2),
                    targets,
                    ignore_index=IGNORE_INDEX,
                    reduction="none",
                )  # (B, L)
                out.row_loss_sums = per_token.sum(dim=1)
        else:
            from transformers.modeling_outputs import CausalLMOutputWithPast

            hidden = self.llm.hidden_states(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs
            )
            weight = self.llm.output_weight()
            if return_row_losses:
                sums = next_token_loss(hidden, weight, labels, per_row=True)
                count = (
                    num_items_in_batch
                    if num_items_in_batch is not None
                    else (shift_labels(labels) != IGNORE_INDEX).sum()
                )
                out = CausalLMOutputWithPast(loss=sums.sum() / count, logits=None)
                out.row_loss_sums = sums
            else:
                loss = next_token_loss(
                    hidden, weight, labels, num_items_in_batch=num_items_in_batch
                )
                out = CausalLMOutputWithPast(loss=loss, logits=None)
        if labels is not None and return_row_losses:
            out.row_targets = (shift_labels(labels) != IGNORE_INDEX).sum(dim=1)
        if idle is not None and out.loss is not None:
            out.loss = out.loss + idle
        return out

    def _forward_sequence_parallel(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        labels: torch.Tensor,
        num_items_in_batch: Any,
        return_row_losses: bool,
    ) -> Any:
        """The loss of a batch whose sequence is split over :attr:`sequence_group`.

        Everything that needs the whole row happens before the split: the audio splice, positions, packed
        documents, the label shift. The loss covers this rank's tokens; it is divided by
        ``num_items_in_batch``, or else by the target tokens of the whole group.
        """
        from transformers.modeling_outputs import CausalLMOutputWithPast

        from afnext.llms.loss import IGNORE_INDEX, shift_labels, target_loss_sums
        from afnext.llms.sequence_parallel import (
            active_layout,
            pack_row,
            sequence_layout,
            split_multiple,
        )

        group = self.sequence_group
        row = pack_row(
            embeds,
            attention_mask,
            position_ids,
            shift_labels(labels.to(embeds.device)),
            split_multiple(group),
        )
        layout = sequence_layout(group, row.cu_seqlens)
        local = layout.local.to(embeds.device)
        with active_layout(layout):
            hidden = self.llm.hidden_states(
                inputs_embeds=row.embeds[local][None],
                attention_mask=None,
                position_ids=row.positions[local][None],
                use_cache=False,
            )[0]  # (L_local, D)
        targets, samples = row.targets[local], row.samples[local]
        weight = self.llm.output_weight()
        if num_items_in_batch is None:
            count = (row.targets != IGNORE_INDEX).sum()  # every rank holds the whole row's targets
            num_items_in_batch = count.clamp(min=1)
        if return_row_losses:
            sums = target_loss_sums(hidden, weight, targets, samples, labels.shape[0])
            out = CausalLMOutputWithPast(loss=sums.sum() / num_items_in_batch, logits=None)
            out.row_loss_sums = sums
            out.row_targets = torch.stack(
                [((targets != IGNORE_INDEX) & (samples == b)).sum() for b in range(labels.shape[0])]
            )
            return out
        total = target_loss_sums(hidden, weight, targets)[0]
        out = CausalLMOutputWithPast(loss=total / num_items_in_batch, logits=None)
        out.num_targets = (targets != IGNORE_INDEX).sum()  # this rank's share of the row's targets
        return out

    def idle_audio_term(self) -> torch.Tensor:
        """0 times the audio path's output on one silent window of one second (see ``forward``'s
        ``idle_audio``): a zero that depends on every encoder, time-embedding and connector parameter."""
        from afnext.encoders.base import encoder_front_end

        front_end = encoder_front_end(self.encoder)
        param = next(self.encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        silence = torch.zeros(int(front_end.sampling_rate))  # one second
        features, mask = front_end(silence, max_seconds=None)
        features, mask = features.to(device), mask.to(device)
        slots = int(self.audio_tokens_for_frames(mask.sum(-1)).sum())
        ids = torch.full((1, slots), self.audio_token_id, dtype=torch.long, device=device)
        return self.encode_audio(features, mask, ids).float().sum() * 0.0

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Generate with a KV cache (transformers' ``generate``: greedy, sampling, beams, penalties, ...).

        Stops on ``<|im_end|>`` unless ``eos_token_id`` is given. Returns ``(B, L + new)`` ids: the prompt
        followed by the generated tokens, as transformers' AF3 / Music Flamingo ``generate`` does.
        """
        embeds = self.embed_inputs(input_ids, input_features, input_features_mask)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        generate_kwargs.setdefault("eos_token_id", self.llm.stop_token_ids())
        generate_kwargs.setdefault("pad_token_id", self.llm.tokenizer.pad_token_id)
        return self.llm.generate(
            input_ids=input_ids,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            **generate_kwargs,
        )

    # ----------------------------------------------------------------------------------------------
    # Checkpoints
    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> AudioLanguageModel:
        """Load an afnext checkpoint, or a transformers AF3 / Music Flamingo / AF-Next folder.

        Args:
            path: Checkpoint folder (safetensors, sharded or not).
            **kwargs: ``attn_implementation`` (the LLM's: ``sdpa``, ``eager``, ``flex_attention``, ...),
                ``encoder_attn_implementation`` (the encoder's; default ``sdpa`` for transformers folders and
                the recorded one for afnext folders), ``dtype``, ``trainable``, ``loss_impl`` (``fused``,
                the default, or ``naive``: see the class docstring).

        Raises:
            CheckpointError: Not a known checkpoint, or weights missing / unexpected (listed).
        """
        from afnext.interop import load_pretrained

        loss_impl = kwargs.pop("loss_impl", None)
        model = load_pretrained(path, cls, **kwargs)
        if loss_impl is not None:
            model.loss_impl = loss_impl
        return model

    def save_pretrained(self, path: str | Path, format: str = "afnext", **kwargs: Any) -> Path:
        """Write a checkpoint folder atomically.

        Args:
            path: Target folder (replaced as a whole only once the new one is complete).
            format: ``afnext`` (any composition) or ``hf`` (a folder transformers loads with its own
                ``AudioFlamingo3ForConditionalGeneration`` / ``MusicFlamingoForConditionalGeneration``).
            **kwargs: ``state_dict``: the weights to write instead of this module's own (a full state dict
                gathered from a sharded model; afnext format only).
        """
        from afnext.interop import save_pretrained

        return save_pretrained(self, path, format=format, **kwargs)
