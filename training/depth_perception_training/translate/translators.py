"""Translators behind one interface: ``gdt``, ``paired`` and ``photometric``.

``translator.translate(frame, conditions, seeds) -> {condition: Translation}`` turns
one day-clear :class:`~.sources.SourceFrame` into one image per target condition, of
the frame's own size. The runner (:mod:`.run`) does the rest (consistency check,
files, manifest) the same way for all three, so the student reads their outputs
through one pairing API (:mod:`.pairs`).

- ``gdt``: SSD's diffusion translation (BLIP-2 caption, PatchFusion-style control
  depth, SD 1.5 + depth ControlNet + IP-Adapter, night darkening).
- ``paired``: the dataset already holds the same frames under other conditions
  (synthetic bags, a simulator, co-registered recordings): the frame with the same
  stamp in the condition's bag.
- ``photometric``: classical synthesis (:mod:`.photometric`), no model at all.

:data:`TRANSLATORS` maps each name to its class; an unknown name is a ValueError. A
class declares the configuration sections its samples depend on (``recipe_keys``,
gathered into :func:`recipe_keys` for the rerun check), whether it runs models on a
device (``needs_models``: the runner then selects device and dtype and loads the control
depth), and checks what it needs of the configuration when that is loaded
(``check_config``). Adding a translator: its class, its entry here, its config section.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from depth_perception.data.bag import BagReader, BagTopics
from depth_perception_training.translate import photometric
from depth_perception_training.translate.sources import SourceFrame, StylePool, condition_of


@dataclass
class Translation:
    image: np.ndarray                      # [H,W,3] uint8 RGB, the source frame's size
    prompt: str | None = None
    caption: str | None = None
    style: str | None = None               # which image prompt was used
    source_depth: object | None = None     # the source's FusedDepth, when computed
    #: what the consistency check judges: the translation as produced, before any
    #: post-processing that is not part of the translation (GDT's night darkening, under
    #: which the control-depth model fails first); None: ``image`` itself
    checked_image: np.ndarray | None = None


@dataclass
class Translator:
    """Base: a name, the model ids it uses, per-stage seconds; what it declares."""

    #: configuration sections (beyond :data:`COMMON_RECIPE_KEYS`) that change its samples
    recipe_keys: ClassVar[tuple[str, ...]] = ()
    #: runs models on a device (device, dtype and the control depth are built for it)
    needs_models: ClassVar[bool] = False

    name: str = "base"
    timings: dict = field(default_factory=lambda: defaultdict(float))

    @classmethod
    def check_config(cls, cfg) -> None:
        """What this translator needs of a :class:`~.config.TranslateConfig` beyond the
        schema; ValueError naming the key. Called when the config is loaded."""

    @classmethod
    def build(cls, cfg, source_bags: list[Path], device=None, dtype=None,
              control_depth=None) -> "Translator":
        """The translator of a resolved :class:`~.config.TranslateConfig`."""
        raise NotImplementedError

    def model_ids(self) -> dict:
        return {}

    def translate(self, frame: SourceFrame, conditions: list[str],
                  seeds: dict[str, int]) -> dict[str, Translation]:
        raise NotImplementedError

    def _timed(self, stage: str, func, *args):
        tic = time.perf_counter()
        try:
            return func(*args)
        finally:
            self.timings[stage] += time.perf_counter() - tic


class PhotometricTranslator(Translator):
    recipe_keys = ("photometric",)

    @classmethod
    def build(cls, cfg, source_bags, device=None, dtype=None, control_depth=None):
        return cls(cfg)

    def __init__(self, cfg):
        super().__init__("photometric")
        self.cfg = cfg.photometric

    def translate(self, frame, conditions, seeds):
        return {c: Translation(self._timed("synthesis", photometric.synthesize, frame.rgb, c,
                                           seeds[c], self.cfg))
                for c in conditions}


class PairedTranslator(Translator):
    """The frame with the same stamp in each condition's bag.

    Condition bags come from ``paired.bags[condition]`` (one per source bag, same order)
    or from the ``paired.sibling`` template (``{parent}/{condition}``: the synthetic
    bags' layout). A bag whose metadata names another condition, a missing stamp or a
    different frame size is an error.
    """

    recipe_keys = ("paired",)

    @classmethod
    def build(cls, cfg, source_bags, device=None, dtype=None, control_depth=None):
        return cls(cfg, source_bags)

    def __init__(self, cfg, source_bags: list[Path]):
        super().__init__("paired")
        self.cfg = cfg.paired
        self.topics = BagTopics(image=cfg.source.image_topic,
                                camera_info=cfg.source.camera_info_topic)
        self.partner: dict[tuple[str, str], Path] = {}
        for condition in cfg.conditions:
            listed = self.cfg.bags.get(condition)
            if listed is not None and len(listed) != len(source_bags):
                raise ValueError(f"paired.bags.{condition} lists {len(listed)} bags for "
                                 f"{len(source_bags)} source bags; expected one each")
            for k, bag in enumerate(source_bags):
                partner = (Path(listed[k]) if listed is not None else Path(
                    self.cfg.sibling.format(parent=bag.parent, condition=condition,
                                            name=bag.name)))
                if not (partner / "metadata.yaml").is_file():
                    raise FileNotFoundError(f"paired: no {condition} bag for {bag} at "
                                            f"{partner} (set paired.bags.{condition})")
                named = condition_of(partner)
                if named is not None and named != condition:
                    raise ValueError(f"paired: {partner} is a '{named}' bag, expected "
                                     f"'{condition}'")
                self.partner[(str(bag), condition)] = partner.resolve()
        self._readers: dict[Path, BagReader] = {}

    def _reader(self, path: Path) -> BagReader:
        if path not in self._readers:
            self._readers[path] = BagReader(path, self.topics)
        return self._readers[path]

    def translate(self, frame, conditions, seeds):
        out = {}
        tol = int(round(self.cfg.max_stamp_diff_ms * 1e6))
        for c in conditions:
            path = self.partner[(frame.ref.bag, c)]
            reader = self._reader(path)
            j, dt = reader.nearest("image", frame.ref.stamp_ns)
            if dt > tol:
                raise ValueError(f"paired: {path} has no image within "
                                 f"{self.cfg.max_stamp_diff_ms} ms of stamp "
                                 f"{frame.ref.stamp_ns} (nearest {dt * 1e-6:.3f} ms away)")
            rgb = self._timed("read_pair", reader.image, j)
            if rgb.shape != frame.rgb.shape:
                raise ValueError(f"paired: {path} frame {j} is {rgb.shape[1]}x{rgb.shape[0]}, "
                                 f"the source frame {frame.rgb.shape[1]}x{frame.rgb.shape[0]}")
            out[c] = Translation(rgb, style=f"{path.name}#{int(reader.stamps('image')[j])}")
        return out


class GDTTranslator(Translator):
    """SSD's GDT: caption + control depth once per frame, one generation per condition."""

    recipe_keys = ("prefixes", "prompt_template", "brightness", "style", "caption",
                   "diffusion")
    needs_models = True

    @classmethod
    def check_config(cls, cfg) -> None:
        missing = [c for c in cfg.conditions if c not in cfg.prefixes]
        if missing:
            raise ValueError(f"prefixes has no prompt prefix for {missing}; add "
                             f"prefixes.<condition>='...'")

    @classmethod
    def build(cls, cfg, source_bags, device=None, dtype=None, control_depth=None):
        return cls(cfg, device, dtype, control_depth)

    def __init__(self, cfg, device, dtype, control_depth):
        super().__init__("gdt")
        from depth_perception_training.translate.caption import Captioner
        from depth_perception_training.translate.gdt import GDTGenerator

        self.cfg = cfg
        m = cfg.models
        self.captioner = (Captioner.from_pretrained(
            m.captioner, device, dtype, m.local_files_only, tidy=True,
            max_new_tokens=cfg.caption.max_new_tokens,
            min_new_tokens=cfg.caption.min_new_tokens) if cfg.caption.enabled else None)
        self.control_depth = control_depth
        self.generator = GDTGenerator(m, cfg.diffusion, device, dtype)
        self.styles = {c: StylePool(c, cfg.style[c], cfg.source.image_topic)
                       if c in cfg.style else None for c in cfg.conditions}
        missing = [c for c, pool in self.styles.items() if pool is None]
        if missing:
            raise ValueError(f"style has no entry for {missing}: set style.<condition>.bags "
                             "or .folder to real frames of that condition (IP-Adapter "
                             "image prompts)")

    def model_ids(self) -> dict:
        m = self.cfg.models
        ids = {"depth": m.depth, "stable_diffusion": m.stable_diffusion,
               "controlnet": m.controlnet,
               "ip_adapter": f"{m.ip_adapter}/{m.ip_adapter_subfolder}/{m.ip_adapter_weight}"}
        if self.cfg.caption.enabled:
            ids["captioner"] = m.captioner
        return ids

    def prompt(self, condition: str, caption: str) -> str:
        return self.cfg.prompt_template.format(prefix=self.cfg.prefixes[condition],
                                               caption=caption).strip(" ,")

    def translate(self, frame, conditions, seeds):
        from depth_perception_training.translate.control_depth import control_image

        # 1. content: caption of the day-clear frame
        caption = (self._timed("caption", self.captioner, frame.rgb)
                   if self.captioner is not None else "") or self.cfg.caption.fallback
        # 2. geometry: high-resolution control depth [H,W]
        depth = self._timed("control_depth", self.control_depth, frame.rgb)  # FusedDepth
        control = control_image(depth.fused)                             # [H,W,3] uint8
        out = {}
        for c in conditions:
            # 3. style: a real frame of the target condition; 4. generation
            style, style_name = self.styles[c].pick(seeds[c])
            prompt = self.prompt(c, caption)
            generated = self._timed("diffusion", self.generator, control, prompt, style,
                                    seeds[c])
            # 5. SD's nights are too bright: darken to a realistic mean luma (the
            #    consistency check judges the generated image, before this)
            image, target = generated, self.cfg.brightness.get(c)
            if target is not None:
                image = self._timed("postprocess", photometric.darken_to_mean_luma, generated,
                                    float(target))
            out[c] = Translation(image, prompt, caption, style_name, depth,
                                 checked_image=generated)
        return out


#: name -> class of every translator (``translator:`` in the configuration)
TRANSLATORS: dict[str, type[Translator]] = {"gdt": GDTTranslator, "paired": PairedTranslator,
                                            "photometric": PhotometricTranslator}

#: configuration sections every translator's samples depend on: the runner's consistency
#: check measures depth with ``models.depth`` and ``control_depth``
COMMON_RECIPE_KEYS = ("translator", "seed", "image_format", "consistency", "models",
                      "control_depth")


def translator_class(name: str) -> type[Translator]:
    """The class registered as ``name``; ValueError naming the known ones otherwise."""
    if name not in TRANSLATORS:
        raise ValueError(f"translator '{name}': expected one of {', '.join(TRANSLATORS)}")
    return TRANSLATORS[name]


def recipe_keys() -> tuple[str, ...]:
    """Configuration keys that change what a sample looks like, of every translator: a
    rerun into an output folder must keep them."""
    keys = list(COMMON_RECIPE_KEYS)
    for cls in TRANSLATORS.values():
        keys += [k for k in cls.recipe_keys if k not in keys]
    return tuple(keys)


def build_translator(cfg, source_bags: list[Path], device=None, dtype=None,
                     control_depth=None) -> Translator:
    """The translator ``cfg.translator`` names (ValueError for an unknown name)."""
    return translator_class(cfg.translator).build(cfg, source_bags, device, dtype,
                                                  control_depth)
