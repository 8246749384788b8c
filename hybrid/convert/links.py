"""Name mapping between our state dict and a source's, checked in full before a single tensor is loaded.

A `Link` ties one or more of our tensors to one or more source tensors, with the two transforms between them
(a rename, rows concatenated, experts stacked ...). An architecture (mamba.py, jamba.py, mamba_ssm.py) is a
list of links built from our model's structure. `load_into` then checks, all at once:
  * every source tensor a link reads exists                        (missing)
  * every source tensor has the shape our model implies             (shape: expected vs got, both names)
  * every source tensor is read by some link or is a known extra    (unmapped)
  * every tensor of our model is written by some link               (uncovered)
and raises one ConversionError listing every problem, so a partial load never happens silently.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Tensors = list[torch.Tensor]


class ConversionError(ValueError):
    """A checkpoint that does not fit the model; `problems` holds one line per bad tensor or config key."""

    def __init__(self, what: str, problems: Sequence[str]):
        self.problems = list(problems)
        lines = "\n  ".join(self.problems)
        super().__init__(f"{what}: {len(self.problems)} problem(s)\n  {lines}")


def _identity(tensors: Tensors) -> Tensors:
    return list(tensors)


@dataclass(frozen=True)
class Link:
    """Our tensors `ours` <-> source tensors `theirs`.

    to_ours(source tensors, in `theirs` order) -> our tensors (in `ours` order); to_theirs the inverse.
    tied: `theirs` is a copy of an already linked tensor (a tied LM head): written on export, and on import
    checked equal to what the main link loaded when the source has it (it may be absent).
    """
    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    to_ours: Callable[[Tensors], Tensors] = _identity
    to_theirs: Callable[[Tensors], Tensors] = _identity
    tied: bool = False


def rename(ours: str, theirs: str, tied: bool = False) -> Link:
    return Link((ours,), (theirs,), tied=tied)


def lm_head_link(tied: bool) -> Link:
    """The LM head: theirs `lm_head.weight`, ours the embedding when the two are tied, else our own head."""
    if tied:
        return rename("embedding.weight", "lm_head.weight", tied=True)
    return rename("lm_head.weight", "lm_head.weight")


def renames(our_keys: Iterable[str], our_prefix: str, their_prefix: str) -> list[Link]:
    """One rename per key of ours under `our_prefix`: `our_prefix + rest` <-> `their_prefix + rest`."""
    return [rename(k, their_prefix + k[len(our_prefix):]) for k in our_keys if k.startswith(our_prefix)]


def concat_rows(ours: Sequence[str], theirs: str, sizes: Sequence[int]) -> Link:
    """theirs [sum(sizes), ...] = cat(ours, dim 0), ours[i] having sizes[i] rows (a fused q|k|v projection)."""
    return Link(tuple(ours), (theirs,), to_ours=lambda t: list(t[0].split(list(sizes), dim=0)),
                to_theirs=lambda t: [torch.cat(t, dim=0)])


def stacked(ours: Sequence[str], theirs: str) -> Link:
    """theirs [n, ...] = stack(ours) (one weight per expert stored as a 3-D tensor)."""
    return Link(tuple(ours), (theirs,), to_ours=lambda t: list(t[0].unbind(0)),
                to_theirs=lambda t: [torch.stack(t, dim=0)])


def stacked_pairs(firsts: Sequence[str], seconds: Sequence[str], theirs: str) -> Link:
    """theirs [n, 2h, ...] = stack(cat(firsts[e], seconds[e]) for each e) (a fused gate|up projection per expert)."""
    n = len(firsts)

    def to_ours(t: Tensors) -> Tensors:
        halves = [w.chunk(2, dim=0) for w in t[0].unbind(0)]  # n pairs of [h, ...]
        return [h[0] for h in halves] + [h[1] for h in halves]

    def to_theirs(t: Tensors) -> Tensors:
        return [torch.stack([torch.cat((t[e], t[n + e]), dim=0) for e in range(n)], dim=0)]

    return Link(tuple(firsts) + tuple(seconds), (theirs,), to_ours=to_ours, to_theirs=to_theirs)


class TensorSource:
    """Read access to a source's tensors by name, without loading them all: keys, shape(key), get(key)."""
    origin = "source"

    def keys(self) -> list[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError


class DictSource(TensorSource):
    """An in-memory state dict (e.g. a transformers model's)."""

    def __init__(self, tensors: dict[str, torch.Tensor], origin: str):
        self.tensors, self.origin = tensors, origin

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].shape)

    def get(self, key: str) -> torch.Tensor:
        return self.tensors[key].detach()


def _expected_theirs(link: Link, ours_shapes: dict[str, tuple]) -> list[tuple]:
    """The source shapes `link` implies for our shapes: to_theirs run on meta tensors (no memory, no data)."""
    fake = [torch.empty(ours_shapes[k], device="meta") for k in link.ours]
    return [tuple(t.shape) for t in link.to_theirs(fake)]


def check(links: Sequence[Link], ours_shapes: dict[str, tuple], source: TensorSource,
          extras: Iterable[str] = ()) -> list[str]:
    """Every problem of loading `source` through `links` into a model of `ours_shapes`, one line each."""
    problems, read = [], set(extras)
    have = set(source.keys())
    written = set()
    for link in links:
        read.update(link.theirs)
        if not link.tied:
            written.update(link.ours)
        missing = [k for k in link.theirs if k not in have]
        if missing and link.tied:
            continue  # a tied copy may be left out of the file
        for k in missing:
            problems.append(f"missing in source: {k!r} (for our {', '.join(link.ours)})")
        if missing:
            continue
        for k, want in zip(link.theirs, _expected_theirs(link, ours_shapes)):
            got = source.shape(k)
            if got != want:
                problems.append(f"shape mismatch: source {k!r} is {list(got)}, our {', '.join(link.ours)} "
                                f"need(s) {list(want)}")
    for k in sorted(have - read):
        problems.append(f"unmapped source tensor: {k!r} {list(source.shape(k))} (no tensor of ours takes it)")
    for k in sorted(set(ours_shapes) - written):
        problems.append(f"no source for our tensor {k!r} {list(ours_shapes[k])}")
    return problems


def load_into(model: nn.Module, links: Sequence[Link], source: TensorSource, extras: Iterable[str] = (),
              dtype: torch.dtype | None = torch.float32, what: str = "") -> nn.Module:
    """Fill `model` (usually built on the meta device) with `source`'s tensors through `links`.

    Raises ConversionError listing every problem (see `check`) before loading anything. Each tensor is copied
    (to `dtype`, or its own dtype when None) and assigned, so the model shares no memory with the source.
    Tied parameters (our LM head) must be re-tied by the caller: assign gives each name its own tensor.
    """
    ours_shapes = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    tied_names = _tied_aliases(model)
    shapes = {k: s for k, s in ours_shapes.items() if k not in tied_names}
    what = what or f"loading {source.origin}"
    problems = check(links, shapes, source, extras)
    if problems:
        raise ConversionError(what, problems)
    state = {}
    for link in links:
        if link.tied:
            continue
        outs = link.to_ours([source.get(k) for k in link.theirs])
        for name, t in zip(link.ours, outs):
            assert tuple(t.shape) == ours_shapes[name], (name, t.shape, ours_shapes[name])
            state[name] = t.to(dtype=dtype or t.dtype, copy=True).contiguous()
    for link in links:  # a tied copy present in the source must equal what was loaded (through its transform)
        if link.tied and set(link.theirs) <= set(source.keys()):
            copies = link.to_ours([source.get(k) for k in link.theirs])
            for name, k, copy in zip(link.ours, link.theirs, copies):
                if not torch.equal(copy.to(state[name].dtype), state[name]):
                    problems.append(f"tied tensor differs: source {k!r} should equal our {name!r} "
                                    f"(the config ties them) but does not")
    if problems:
        raise ConversionError(what, problems)
    for alias, target in tied_names.items():
        state[alias] = state[target]
    model.load_state_dict(state, strict=True, assign=True)
    return model


def export_from(model: nn.Module, links: Sequence[Link], want: dict[str, tuple], what: str) -> dict:
    """Our tensors through `links` into the source's names; checked against `want` ({name: shape}, the target
    model's state dict) so that every target tensor is written with its shape. Returns {name: tensor}."""
    ours = model.state_dict()
    out = {}
    for link in links:
        for k, t in zip(link.theirs, link.to_theirs([ours[n].detach() for n in link.ours])):
            out[k] = t
    problems = [f"the target has no tensor {k!r} (ours would write it)" for k in out if k not in want]
    problems += [f"nothing of ours writes target tensor {k!r} {list(s)}" for k, s in want.items() if k not in out]
    problems += [f"shape mismatch: target {k!r} is {list(want[k])}, ours give {list(t.shape)}"
                 for k, t in out.items() if k in want and tuple(t.shape) != tuple(want[k])]
    if problems:
        raise ConversionError(what, problems)
    return out


def _tied_aliases(model: nn.Module) -> dict[str, str]:
    """{name: first name} for every state-dict entry that is the same tensor as an earlier one (a tied head)."""
    first, aliases = {}, {}
    for name, t in model.state_dict(keep_vars=True).items():
        key = id(t)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases
