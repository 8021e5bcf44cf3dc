"""Explicit recurrent state for decoding: one (conv_state, ssm_state) pair per Mamba layer.

A Mamba layer's whole memory of the past is a fixed-size state, so decoding needs O(1) memory
per new token. ``MambaCache`` holds every layer's state for a batch:

    conv_states[i]: (b, conv_dim, d_conv)   the last d_conv inputs of layer i's short conv
    ssm_states[i]:  (b, d_inner, d_state) for Mamba-1, (b, nheads, headdim, d_state) for Mamba-2
    seqlen_offset:  tokens already consumed (0 for a fresh cache)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qmamba.errors import InputError


@dataclass
class LayerState:
    conv_state: Tensor  # (b, conv_dim, d_conv)
    ssm_state: Tensor  # (b, d_inner, n) or (b, h, p, n)

    def advance(self, conv_inputs: Tensor, final_ssm_state: Tensor) -> None:
        """After a sequence: keep the last d_conv conv inputs (b, conv_dim, l) and the final SSM state."""
        self.ssm_state.copy_(final_ssm_state)
        w, l = self.conv_state.shape[-1], conv_inputs.shape[-1]
        if l >= w:  # only the tail is read (a long prefill's inputs are large)
            self.conv_state.copy_(conv_inputs[:, :, l - w:])
        else:
            joined = torch.cat([self.conv_state[:, :, l:], conv_inputs.to(self.conv_state.dtype)], dim=-1)
            self.conv_state.copy_(joined)


@dataclass
class MambaCache:
    layers: list[LayerState]
    seqlen_offset: int = 0

    @property
    def batch_size(self) -> int:
        return self.layers[0].conv_state.shape[0] if self.layers else 0

    def reset(self) -> None:
        """Forget everything: zero every state and the offset (buffers are kept, for CUDA graphs)."""
        for layer in self.layers:
            layer.conv_state.zero_()
            layer.ssm_state.zero_()
        self.seqlen_offset = 0

    def first_rows(self, rows: int) -> MambaCache:
        """The state of the first ``rows`` rows as views of these buffers: writes through it land here."""
        return MambaCache([LayerState(s.conv_state[:rows], s.ssm_state[:rows]) for s in self.layers],
                          self.seqlen_offset)

    def load_rows(self, source: MambaCache) -> None:
        """Copy ``source``'s state (b rows, b <= this batch) into the first b rows, in place (the buffers stay)."""
        b = source.batch_size
        for dst, src in zip(self.layers, source.layers):
            dst.conv_state[:b].copy_(src.conv_state)
            dst.ssm_state[:b].copy_(src.ssm_state)
        self.seqlen_offset = source.seqlen_offset

    def write_rows(self, source: MambaCache, rows: Tensor | list[int]) -> None:
        """Copy ``source``'s k rows into rows ``rows`` (k slot indices) of these buffers, in place: the other rows
        and the buffers themselves stay, so a decode batch over these buffers keeps its rows (and any captured
        graph stays valid) while one row's sequence is replaced. ``seqlen_offset`` is left as it is."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.layers[0].conv_state.device)  # (k,)
        if index.numel() != source.batch_size:
            raise InputError(f"{index.numel()} slot indices for a source of {source.batch_size} rows")
        for dst, src in zip(self.layers, source.layers):
            dst.conv_state.index_copy_(0, index, src.conv_state.to(dst.conv_state.dtype))
            dst.ssm_state.index_copy_(0, index, src.ssm_state.to(dst.ssm_state.dtype))

    def clear_rows(self, rows: Tensor | list[int]) -> None:
        """Zero rows ``rows`` of every state (a freed slot), in place."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.layers[0].conv_state.device)  # (k,)
        for layer in self.layers:
            layer.conv_state.index_fill_(0, index, 0)
            layer.ssm_state.index_fill_(0, index, 0)

    def select_rows(self, rows: Tensor) -> None:
        """Keep only batch rows ``rows`` (e.g. after some sequences finished)."""
        for layer in self.layers:
            layer.conv_state = layer.conv_state.index_select(0, rows)
            layer.ssm_state = layer.ssm_state.index_select(0, rows)

    def to(self, device: torch.device | str) -> MambaCache:
        for layer in self.layers:
            layer.conv_state = layer.conv_state.to(device)
            layer.ssm_state = layer.ssm_state.to(device)
        return self
