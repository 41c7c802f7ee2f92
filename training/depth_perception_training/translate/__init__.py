"""Translation of day-clear frames into night, rain and snow (SSD Sec. 3.2).

``depth-perception translate --config config/translate/gdt.yaml`` reads day-clear
frames from rosbags through the onboard data layer, translates each into every target
condition and writes a dataset the student trainer pairs with its originals.

Modules (each a step of the pipeline, usable alone):

- :mod:`.config` — the configuration schema and loader (``config/translate/*.yaml``);
- :mod:`.sources` — source frames from bags, sharding, per-sample seeds, image prompts;
- :mod:`.caption` — BLIP-2 captions;
- :mod:`.control_depth` — MiDaS/DPT control depth, PatchFusion-style tiled fusion;
- :mod:`.gdt` — SD 1.5 + depth ControlNet + IP-Adapter generation (Eq. 3);
- :mod:`.photometric` — classical night/rain/snow synthesis, night darkening;
- :mod:`.consistency` — the depth-consistency check;
- :mod:`.translators` — ``gdt``, ``paired``, ``photometric`` behind one interface;
- :mod:`.manifest` — atomic images, append-only manifest parts, merge, resume;
- :mod:`.bags` — optional rosbag2 per (source bag, condition);
- :mod:`.run` — the run: shard, skip what is done, translate, check, write, merge;
- :mod:`.pairs` — **the pairing API** the student consumes;
- :mod:`.tiny` — tiny random models in the hub's layout (CPU checks, tests, bench).

Pairing API (:class:`.pairs.TranslationPairs`)::

    from depth_perception_training.translate.pairs import TranslationPairs

    pairs = TranslationPairs("runs/translate_gdt")        # output_dir of a run
    frame = pairs.lookup(sample.bag, sample.stamp_ns)      # a BagSequence Sample's frame
    if frame is not None:
        night = frame.translations["night"].image()        # [H,W,3] uint8, source size
    for frame in pairs: ...                                # every day-clear frame with
                                                           # its accepted translations

Each manifest record (``output_dir/manifest.jsonl``, one JSON object per line) holds:
``key``, ``source_bag``, ``bag_id``, ``topic``, ``stamp_ns``, ``index``, ``condition``,
``translator``, ``image`` (relative path), ``width``, ``height``, ``prompt``,
``caption``, ``style`` (image prompt used), ``seed``, ``models`` (ids),
``consistency`` (score or null) and ``accepted``.

Nothing here imports torch at package import; the modules that need it import it in
their functions.
"""
