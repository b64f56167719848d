"""MeshAnything: tokenisation round trips, grammar, post-processing, the model (save/load, official
weights), data source, recipe, pipeline, CLI, benchmark and app. Offline; tiny models only. The
model-dependent tests use a tiny MeshAnything trained here for a few seconds to write a cube."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
from genstudio.render import InputError  # noqa: E402
from pipelines.mesh.tokenize import (BOS, EOS, PAD, AMTGrammar, FaceGrammar, amt_decode, amt_encode,  # noqa: E402
                                     amt_strips, amt_vocab_size, canonicalize, postprocess, quantize_mesh, separator_id,
                                     token_roles)

SEP = separator_id()


def urdf_like(seed: int = 0, parts: int = 3) -> "trimesh.Trimesh":
    """Like a pybullet random_urdfs object: a union of a few convex hulls of random points."""
    rng = np.random.default_rng(seed)
    hulls = [trimesh.convex.convex_hull(rng.normal(size=(12, 3)) * rng.uniform(0.2, 0.6, 3) + rng.normal(size=3) * 0.5)
             for _ in range(parts)]
    return trimesh.util.concatenate(hulls)


def fixture_meshes() -> dict:
    flipped = trimesh.creation.icosphere(1)
    faces = flipped.faces.copy()
    faces[::3] = faces[::3, ::-1]  # inconsistent winding: strips must break, nothing may be lost
    fan = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]],
                          [[0, 1, 2], [0, 2, 1], [0, 1, 3], [0, 1, 4], [2, 3, 4]], process=False)  # non-manifold edge
    return {"cube": trimesh.creation.box(), "icosphere": trimesh.creation.icosphere(2),
            "cylinder": trimesh.creation.cylinder(0.3, 1.0, sections=24), "urdf_like": urdf_like(0),
            "flipped": trimesh.Trimesh(flipped.vertices, faces, process=False), "non_manifold": fan}


def oriented_faces(q) -> set:
    """Faces as sets of oriented coordinate triples (rotation-invariant)."""
    out = set()
    for f in q.faces:
        tri = [tuple(q.vertices[i]) for i in f]
        k = tri.index(min(tri))
        out.add(tuple(tri[k:] + tri[:k]))
    return out


# ---- tokenisation ----

@pytest.mark.parametrize("name", list(fixture_meshes()))
def test_amt_round_trip_is_lossless_with_orientation(name):
    mesh = fixture_meshes()[name]
    q = quantize_mesh(mesh.vertices, mesh.faces)
    tokens = amt_encode(q)
    assert tokens.min() >= 3 and tokens.max() <= SEP and EOS not in tokens
    back = amt_decode(tokens)
    assert back == q and oriented_faces(back) == oriented_faces(q)
    assert amt_decode(np.concatenate([[BOS], tokens, [EOS, PAD, PAD]])) == q  # specials are skipped/ended on
    if name in ("icosphere", "cylinder"):
        assert len(tokens) < 0.6 * 9 * q.num_faces  # adjacency pays: ~1/2 of the 9 tokens per face


def test_canonical_order_and_cleaning():
    bins = np.array([[5, 0, 9], [1, 2, 3], [7, 7, 0], [1, 2, 3], [0, 0, 0]])
    faces = np.array([[0, 1, 2], [2, 0, 1], [3, 1, 2], [0, 2, 2], [2, 1, 0]])  # dup (rotation), dup vertex, degenerate, flip
    q = canonicalize(bins, faces)
    keys = [(z, y, x) for x, y, z in q.vertices]
    assert keys == sorted(keys) and len(q.vertices) == 3           # merged, unreferenced [0 0 0] dropped, z-y-x sorted
    assert q.num_faces == 1 and q.faces[0, 0] == q.faces[0].min()  # one face left, smallest vertex first
    rot = quantize_mesh(*(lambda m: (m.vertices, m.faces))(trimesh.creation.icosphere(1)))
    assert (rot.faces[:, 0] < rot.faces[:, 1:].min(1)).all()
    assert (np.diff(rot.faces[:, 0]) >= 0).all() and rot.vertices.max() <= 127 and rot.vertices.min() >= 0


def test_amt_layout_matches_the_reference():
    assert amt_vocab_size() == 132 and SEP == 131  # 128 bins + BOS/EOS/PAD + separator
    two = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 2], [1, 3, 2]], process=False)
    apart = trimesh.util.concatenate([two, trimesh.Trimesh([[0, 0, 1], [1, 0, 1], [0, 1, 1]], [[0, 1, 2]])])
    assert len(amt_encode(quantize_mesh(two.vertices, two.faces))) == 9 + 3  # the 2nd face adds one vertex
    tokens = amt_encode(quantize_mesh(apart.vertices, apart.faces))
    assert len(tokens) == 9 + 3 + 1 + 9 and list(tokens).count(SEP) == 1
    # a reference-style sequence (first face sorted a<b<c, then the sorted neighbour) decodes to the same faces
    q = quantize_mesh(two.vertices, two.faces)
    a, b, c = sorted(q.faces[0])
    ref = np.concatenate([q.vertices[[a, b, c]].ravel() + 3, q.vertices[[v for v in q.faces[1] if v not in (b, c)]].ravel() + 3])
    assert {tuple(sorted(map(tuple, q.vertices[f]))) for f in amt_decode(ref).faces} == \
        {tuple(sorted(map(tuple, q.vertices[f]))) for f in q.faces}


def test_token_roles_match_the_reference_loop_embedding_and_continue_across_calls():
    coords = list(range(10, 22))
    ids = torch.tensor([[BOS, *coords, SEP, *coords[:9], EOS]])
    roles, end = token_roles(ids)
    expected = [0, 4, 5, 6, 4, 5, 6, 4, 5, 6, 7, 8, 9, 3, 4, 5, 6, 4, 5, 6, 4, 5, 6, 1]
    assert roles[0].tolist() == expected and end.item() == 0
    state, pieces = None, []
    for t in range(ids.shape[1]):  # one token at a time, as KV-cached generation feeds them
        r, state = token_roles(ids[:, t:t + 1], state)
        pieces.append(r)
    assert torch.cat(pieces, 1).tolist() == roles.tolist()
    v1, _ = token_roles(torch.tensor([[BOS, 5, 6, 7, 8, 9, 10, EOS]]), tokenization="v1", tokens_per_face=3)
    assert v1[0].tolist() == [0, 3, 4, 5, 3, 4, 5, 1]


def _allowed(grammar, prefix, vocab=132):
    scores = grammar(torch.tensor([prefix], dtype=torch.long).reshape(1, -1), torch.zeros(1, vocab))
    return torch.isfinite(scores[0])


def test_grammar_stops_a_decoder_that_cycles_through_the_same_faces():
    a, b, c = [10, 10, 10], [10, 11, 10], [10, 10, 11]  # coordinates as tokens (offset included)
    cycle = a + b + c + a + b + c  # faces (a,b,c), (b,c,a), ... : one face repeated
    loop = a + b + c + (a + b + c) * 4  # 15 vertices = 13 faces, 12 of them repeats
    assert _allowed(AMTGrammar(loop_faces=12), loop).tolist() == [i == EOS for i in range(132)]
    assert _allowed(AMTGrammar(loop_faces=13), loop)[3:131].any()  # one repeat short: it may go on
    assert _allowed(AMTGrammar(loop_faces=None), loop)[3:131].any()
    assert _allowed(AMTGrammar(loop_faces=2), cycle)[EOS]


def test_grammar_forbids_zero_area_and_repeated_faces():
    """Issue #19: the vertex completing a face may not be collinear with the other two, nor repeat a
    face already written; geometry=False (the syntax-only grammar) allows both."""
    line = [10, 10, 10, 10, 10, 11]                                     # bins (7,7,7), (7,7,8): a z line
    y = _allowed(AMTGrammar(), line + [10])[3:131]                      # x = 7: y = 7 would leave only the line
    assert not y[7] and y.sum() == 127
    assert _allowed(AMTGrammar(geometry=False), line + [10])[3:131].all()
    z = _allowed(AMTGrammar(), line + [11])[3:131]                       # x = 8: every z is off the line
    assert z[8:].all()
    diagonal = [10, 10, 10, 11, 11, 11]                                 # (7,7,7), (8,8,8): (9,9,9) is on it
    z = _allowed(AMTGrammar(), diagonal + [12, 12])[3:131]             # (z >= 7: it must follow the 1st)
    assert not z[9] and z[7:].sum() == 120 and not z[:7].any()
    assert _allowed(AMTGrammar(geometry=False), diagonal + [12, 12])[3 + 9]
    face = [10, 10, 10, 11, 10, 10, 10, 11, 10]                         # (7,7,7), (8,7,7), (7,8,7)
    z = _allowed(AMTGrammar(), face + [9, 12])[3:131]                   # a strip's later vertex: (6,9,7) is on
    assert not z[7] and z.sum() == 127                                  # the line through its last two
    z = _allowed(AMTGrammar(), face + [10, 10])[3:131]                  # (7,7,7) again: the same face
    assert not z[7] and z.sum() == 127
    assert _allowed(AMTGrammar(geometry=False), face + [10, 10])[3 + 7]
    z = _allowed(AMTGrammar(), face + [SEP] + face[:8])[3:131]          # a new strip repeating it, too
    assert not z[7]
    g = AMTGrammar()                                                    # incremental calls keep the faces seen
    for n in range(len(face) + 3):
        mask = _allowed(g, (face + [10, 10])[:n])
    assert not mask[3 + 7]


def test_grammar_accepts_real_sequences_and_forbids_invalid_tokens():
    for name, mesh in fixture_meshes().items():
        tokens = amt_encode(quantize_mesh(mesh.vertices, mesh.faces)).tolist() + [EOS]
        grammar = AMTGrammar()
        for n in range(len(tokens)):  # incremental, as generate calls it
            assert _allowed(grammar, tokens[:n])[tokens[n]], (name, n)
    g = AMTGrammar(max_faces=2)
    start = _allowed(g, [])
    assert start[3:131].all() and not start[[BOS, EOS, PAD, SEP]].any()             # a strip starts with a face
    assert not _allowed(AMTGrammar(), [10, 10])[[SEP, EOS]].any()                    # no separator inside a vertex
    face = [10, 10, 10, 11, 10, 10, 10, 11, 10]
    assert not _allowed(AMTGrammar(), face[:6])[[SEP, EOS]].any()                    # nor before a full face
    assert _allowed(AMTGrammar(), face)[[SEP, EOS]].all()
    z = _allowed(AMTGrammar(), [10, 10, 10, 10, 10])[3:131]                          # 2nd vertex (x=y=7) > the 1st
    assert not z[:8].any() and z[8:].all()
    z = _allowed(AMTGrammar(), face + [9, 9])[3:131]                                 # new vertex != the last two
    assert z.sum() == 128
    z = _allowed(AMTGrammar(), face + [10, 11])[3:131]                               # (7, 8, 7) was just used
    assert not z[7] and z.sum() == 127
    assert _allowed(g, face + [12, 12, 12]).tolist() == [i == EOS for i in range(132)]  # 2 faces: only EOS
    short = _allowed(AMTGrammar(max_new_tokens=15), face)                            # no room for a new strip
    assert short[EOS] and not short[SEP] and short[3:131].all()
    assert _allowed(AMTGrammar(max_new_tokens=12), face).tolist() == [i == EOS for i in range(132)]
    fg = FaceGrammar(num_quantizers=2, codebook_size=4, max_faces=1)
    first = _allowed(fg, [], 11)
    assert first[3:7].all() and not first[7:].any() and not first[EOS]
    assert _allowed(fg, [3])[7:11].all() and not _allowed(fg, [3])[3:7].any()       # stage 2 has its own codebook
    assert _allowed(fg, [3, 7] * 3, 11).tolist() == [i == EOS for i in range(11)]


def test_postprocess_cleans_and_orients():
    cube = trimesh.creation.box()
    faces = cube.faces.copy()
    faces[:4] = faces[:4, ::-1]                                   # some flipped
    faces = np.concatenate([faces, faces[:2], [[0, 0, 1]]])        # duplicates and a degenerate face
    vertices = np.concatenate([cube.vertices, [[5.0, 5.0, 5.0]]])  # an unused vertex
    mesh = postprocess(vertices, faces)
    assert len(mesh.faces) == 12 and len(mesh.vertices) == 8
    assert mesh.is_winding_consistent and mesh.volume > 0 and mesh.is_watertight


# ---- metrics ----

def test_normal_consistency():
    from genstudio.metrics import normal_consistency
    rng = np.random.default_rng(0)
    p, n = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    assert normal_consistency(p, n, p, n) == pytest.approx(1.0)
    assert normal_consistency(p, n, p, -n) == pytest.approx(1.0)
    assert normal_consistency(p, n, p, -n, oriented=True) == pytest.approx(-1.0)
    up, side = np.tile([0, 0, 1.0], (200, 1)), np.tile([1.0, 0, 0], (200, 1))
    assert normal_consistency(p, up, p, side) == pytest.approx(0.0)


# ---- the model ----

def tiny_config(**kw):
    from pipelines.mesh.meshanything import meshanything_config
    return meshanything_config("tiny", **kw)


def cube_condition(num_points: int, seed: int = 0):
    from pipelines.mesh.data import normalize_points, sample_surface
    cube = trimesh.creation.box()
    points, normals = sample_surface(cube.vertices, cube.faces, num_points, np.random.default_rng(seed))
    return torch.from_numpy(normalize_points(np.concatenate([points, normals], 1))[0]).float()


@pytest.fixture(scope="module")
def tiny_mesh_model(tmp_path_factory):
    """A tiny MeshAnything that has memorised the cube: greedy decoding writes its 12 faces."""
    from pipelines.mesh.meshanything import MeshAnythingModel
    torch.manual_seed(0)
    model = MeshAnythingModel(tiny_config())
    cube = trimesh.creation.box()
    target = quantize_mesh(cube.vertices, cube.faces)
    ids = torch.tensor([[BOS, *amt_encode(target).tolist(), EOS]])
    points = torch.stack([cube_condition(model.config.num_points, s) for s in range(2)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(100):  # greedy decoding writes the cube from step ~40 on: 100 leaves a margin
        loss = model(points, ids.expand(2, -1)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    folder = tmp_path_factory.mktemp("ckpt") / "meshanything-tiny"
    model.save_pretrained(folder)
    obj = folder.parent / "cube.obj"
    obj.write_text(cube.export(file_type="obj"))
    return SimpleNamespace(model=model, folder=folder, target=target, loss=loss.item(), obj=obj)


def test_save_load_and_cached_generation_agree_with_teacher_forcing(tiny_mesh_model):
    from pipelines.mesh.meshanything import MeshAnythingModel
    model = tiny_mesh_model.model
    loaded = MeshAnythingModel.from_pretrained(tiny_mesh_model.folder).eval()
    assert loaded.transformer.lm.lm_head.weight is loaded.token_embedding.weight  # tied after loading
    points = cube_condition(model.config.num_points, 5)[None]
    tokens = model.generate_tokens(points)[0]
    assert torch.equal(tokens, loaded.generate_tokens(points)[0])
    assert model.tokens_to_mesh(tokens) == tiny_mesh_model.target, f"loss {tiny_mesh_model.loss:.4f}"
    # the one-token-at-a-time role state gives the same logits as a full teacher-forced pass
    ids = torch.cat([torch.tensor([BOS]), tokens, torch.tensor([EOS])])[None]
    with torch.no_grad():
        logits = loaded(points, ids).logits[0, loaded.config.prefix_length:]
    grammar, masked = AMTGrammar(), []
    for n in range(len(tokens) + 1):
        masked.append(int(grammar(ids[:, 1:1 + n], logits[n:n + 1].clone()).argmax()))
    assert masked == ids[0, 1:].tolist()


def test_greedy_decoding_of_untrained_models_always_gives_faces():
    """Issue #19: greedy decoding under the grammar ends with >= 1 real face, even for a model that
    has learnt nothing. One with all-zero logits takes the lowest allowed token each step: without
    the geometric constraints that is (0,0,0), (0,0,1), (0,0,2) (a zero-area face), then EOS."""
    from pipelines.mesh.meshanything import MeshAnythingModel
    from pipelines.mesh.pipeline import MeshAnythingPipeline
    points = cube_condition(256, 0)[None]
    for seed in range(3):
        torch.manual_seed(seed)
        model = MeshAnythingModel(tiny_config()).eval()
        if seed == 0:
            with torch.no_grad():
                model.token_embedding.weight.zero_()  # tied to the output head: every logit is 0
            loose = model.generate_tokens(points, max_faces=8, constrained=False)[0]
            assert model.tokens_to_mesh(loose).num_faces == 1
            assert len(postprocess(model.mesh_vertices(model.tokens_to_mesh(loose)),
                                   model.tokens_to_mesh(loose).faces).faces) == 0
        tokens = model.generate_tokens(points, max_faces=8)[0]
        q = model.tokens_to_mesh(tokens)
        assert 1 <= q.num_faces <= 8, seed
        assert q.num_faces == sum(len(s) - 2 for s in amt_strips(tokens.numpy()))  # no face dropped
        assert len(postprocess(model.mesh_vertices(q), q.faces).faces) == q.num_faces
    pipe = MeshAnythingPipeline(model)
    out = pipe(trimesh.creation.box(), max_faces=8, seed=0, fallback=False)
    assert not out.failed and out.num_faces >= 1 and out.message.startswith("greedy")


def test_sampling_is_seeded_and_respects_the_face_limit(tiny_mesh_model):
    model, points = tiny_mesh_model.model, cube_condition(256, 1)[None]
    a = model.generate_tokens(points, do_sample=True, temperature=1.5, seed=3, max_faces=5)[0]
    b = model.generate_tokens(points, do_sample=True, temperature=1.5, seed=3, max_faces=5)[0]
    assert torch.equal(a, b) and model.tokens_to_mesh(a).num_faces <= 5
    assert model.face_budget() > 64 and model.token_budget() == 640 - 9 - 1


def test_v1_face_vq_path_shapes():
    from pipelines.mesh.meshanything import MeshAnythingModel
    torch.manual_seed(0)
    model = MeshAnythingModel(tiny_config(tokenization="v1")).eval()
    cfg = model.config
    assert cfg.vocab_size == 3 + cfg.vq_num_quantizers * cfg.vq_codebook_size and cfg.tokens_per_face == 9
    coords = torch.randint(0, 128, (2, 7, 9))
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    out = model.face_vq(coords, mask)
    assert out["indices"].shape == (2, 7, 3, cfg.vq_num_quantizers) and torch.isfinite(out["loss"])
    assert model.face_vq.decode(model.face_vq.encode(coords, mask).quantized, mask).shape == (2, 7, 9, 128)
    tokens = model.face_vq.indices_to_tokens(out["indices"])
    assert tokens.shape == (2, 7 * 9) and torch.equal(model.face_vq.tokens_to_indices(tokens[0]), out["indices"][0])
    from pipelines.mesh.train import v1_batch_tokens
    ids, attn, labels = v1_batch_tokens(model, coords, mask, out["indices"])
    assert ids[1, 4 * 9 + 1] == EOS and attn[1].sum() == 4 * 9 + 2 and (labels[1, 4 * 9 + 2:] == -100).all()
    assert torch.isfinite(model(torch.randn(2, 256, 6), ids, attn, labels).loss)
    gen = model.generate_tokens(torch.randn(1, 256, 6), max_faces=3, do_sample=True, seed=0)[0]
    assert len(gen) % 9 == 0 and len(gen) <= 27
    assert model.tokens_to_mesh(gen).num_faces <= 3


def official_state_dict(width=32, latents=4, kl=8, hidden=64, layers=2, ffn=128, positions=300):
    """A random state dict with MeshAnythingV2's key names (reference: miche's AlignedShapeLatentPerceiver
    under point_encoder.model.shape_model, cond_*_proj, ShapeOPT under transformer)."""
    g, sd = torch.Generator().manual_seed(0), {}

    def add(name, *shape):
        sd[name] = torch.randn(*shape, generator=g) * 0.05

    def block(prefix, cross=False):
        if cross:
            add(prefix + "attn.c_q.weight", width, width)
            add(prefix + "attn.c_kv.weight", 2 * width, width)
        else:
            add(prefix + "attn.c_qkv.weight", 3 * width, width)
        add(prefix + "attn.c_proj.weight", width, width)
        add(prefix + "attn.c_proj.bias", width)
        for ln in ("ln_1", "ln_2", "ln_3") if cross else ("ln_1", "ln_2"):
            add(prefix + ln + ".weight", width)
            add(prefix + ln + ".bias", width)
        add(prefix + "mlp.c_fc.weight", 4 * width, width)
        add(prefix + "mlp.c_fc.bias", 4 * width)
        add(prefix + "mlp.c_proj.weight", width, 4 * width)
        add(prefix + "mlp.c_proj.bias", width)

    pe, dec = "point_encoder.model.shape_model.", "transformer.model.decoder."
    add(pe + "encoder.query", latents + 1, width)
    add(pe + "encoder.input_proj.weight", width, 3 * 17 + 3)
    add(pe + "encoder.input_proj.bias", width)
    block(pe + "encoder.cross_attn.", cross=True)
    block(pe + "encoder.self_attn.resblocks.0.")
    add(pe + "encoder.ln_post.weight", width)
    add(pe + "encoder.ln_post.bias", width)
    add(pe + "pre_kl.weight", 2 * kl, width)
    add(pe + "pre_kl.bias", 2 * kl)
    add(pe + "post_kl.weight", width, kl)
    add(pe + "post_kl.bias", width)
    block(pe + "transformer.resblocks.0.")
    add(pe + "geo_decoder.query_proj.weight", width, 51)                   # occupancy head: dropped
    add("point_encoder.model.shape_projection", width, width)               # CLIP alignment: dropped
    add("cond_head_proj.weight", hidden, width)
    add("cond_head_proj.bias", hidden)
    add("cond_proj.weight", hidden, 2 * width)
    add("cond_proj.bias", hidden)
    add(dec + "embed_tokens.weight", 132, hidden)
    add(dec + "embed_positions.weight", positions + 2, hidden)
    add(dec + "token_embed_positions.weight", 10, hidden)
    add(dec + "cond_embed.weight", 2, hidden)
    for i in range(layers):
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            add(f"{dec}layers.{i}.self_attn.{proj}.weight", hidden, hidden)
            add(f"{dec}layers.{i}.self_attn.{proj}.bias", hidden)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            add(f"{dec}layers.{i}.{ln}.weight", hidden)
            add(f"{dec}layers.{i}.{ln}.bias", hidden)
        add(f"{dec}layers.{i}.fc1.weight", ffn, hidden)
        add(f"{dec}layers.{i}.fc1.bias", ffn)
        add(f"{dec}layers.{i}.fc2.weight", hidden, ffn)
        add(f"{dec}layers.{i}.fc2.bias", hidden)
    sd["transformer.lm_head.weight"] = sd[dec + "embed_tokens.weight"]
    return sd


def test_official_weights_map_onto_the_model(tmp_path):
    from safetensors.torch import save_file
    from pipelines.mesh.meshanything import MeshAnythingModel, convert_official_state_dict, official_config
    sd = official_state_dict()
    file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items() if k != "transformer.lm_head.weight"}, str(file))
    model = MeshAnythingModel.from_official(str(file))
    cfg, state = model.config, model.state_dict()
    assert (cfg.point_width, cfg.num_latents, cfg.point_kl_dim, cfg.point_decoder_layers) == (32, 4, 8, 1)
    lm = model.transformer.lm.config
    assert (lm.hidden_size, lm.num_hidden_layers, lm.ffn_dim, lm.max_position_embeddings) == (64, 2, 128, 300)
    assert lm.do_layer_norm_before is False and model.transformer.lm.model.decoder.final_layer_norm is None
    pairs = {"point_encoder.model.shape_model.encoder.query": "point_encoder.encoder.query",
             "point_encoder.model.shape_model.transformer.resblocks.0.attn.c_qkv.weight":
                 "point_encoder.transformer.resblocks.0.attn.c_qkv.weight",
             "transformer.model.decoder.token_embed_positions.weight": "transformer.lm.model.decoder.embed_tokens.roles.weight",
             "transformer.model.decoder.cond_embed.weight": "transformer.lm.model.decoder.embed_tokens.segments.weight",
             "transformer.model.decoder.layers.1.fc2.weight": "transformer.lm.model.decoder.layers.1.fc2.weight",
             "cond_proj.weight": "cond_proj.weight"}
    for official, ours in pairs.items():
        assert torch.equal(sd[official], state[ours]), official
    assert torch.equal(model.transformer.lm.lm_head.weight, sd["transformer.model.decoder.embed_tokens.weight"])
    tokens = model.generate_tokens(torch.randn(1, 64, 6), max_faces=2)[0]
    assert model.tokens_to_mesh(tokens).num_faces <= 2
    with pytest.raises(ValueError, match="no MeshAnythingModel counterpart"):
        convert_official_state_dict({**sd, "mystery_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not an official"):
        official_config({"a": torch.zeros(1)})


# ---- data ----

@pytest.fixture(scope="module")
def urdf_folder(tmp_path_factory):
    """random_urdfs-style objects (z-up, as pybullet's) for the `meshes` source."""
    root = tmp_path_factory.mktemp("pybullet") / "random_urdfs"
    tall = trimesh.creation.box((0.2, 0.3, 1.0))  # tall along z: y-up makes it tall along y
    meshes = [tall, trimesh.creation.icosphere(1), urdf_like(1), urdf_like(2, parts=2), trimesh.creation.box(),
              urdf_like(3), trimesh.creation.cylinder(0.2, 0.5, sections=10), trimesh.creation.icosphere(3)]
    for k, mesh in enumerate(meshes):
        (root / f"{k:03d}").mkdir(parents=True)
        (root / f"{k:03d}" / f"{k:03d}.obj").write_text(mesh.export(file_type="obj"))
    (root / "008").mkdir()
    (root / "008" / "008.obj").write_text("this is not an obj\n")
    return root


@pytest.fixture(scope="module")
def meshes_built(urdf_folder):
    from genstudio.data import prepare
    return prepare("meshes", force=True, quiet=True, source_dir=str(urdf_folder), points=512, resolution=32,
                   max_faces=400)


def test_meshes_source_builds_from_a_folder(meshes_built):
    from genstudio.data import load_manifest
    items = {it["id"]: it for it in load_manifest("meshes")}
    assert set(items) == {f"urdf/{k:03d}" for k in range(7)}  # icosphere(3) has 1280 faces; 008 is unreadable
    info = json.loads((meshes_built / "info.json").read_text())
    assert info["licences"] == {"zlib (pybullet_data)": 7}
    with np.load(items["urdf/000"]["path"]) as z:
        v, points = z["vertices"], z["points"].astype(np.float64)
    extent = v.max(0) - v.min(0)
    assert extent[1] == pytest.approx(1.0) and extent[2] == pytest.approx(0.3, abs=1e-3)  # y-up, unit cube
    assert points.shape == (512, 6) and np.allclose(np.linalg.norm(points[:, 3:], axis=1), 1, atol=1e-2)
    assert np.abs(points[:, :3]).max() < 0.55  # the dense remesh hugs the unit-cube mesh
    from pipelines.mesh.data import y_up
    box = trimesh.creation.box()
    assert items["urdf/004"]["faces"] == 12
    assert items["urdf/004"]["tokens"] == len(amt_encode(quantize_mesh(y_up(box.vertices), box.faces)))


def test_slim_copy_keeps_what_a_preset_trains_on(meshes_built, tmp_path, monkeypatch):
    from genstudio.data import load_manifest
    from pipelines.mesh.data import slim_copy
    items = load_manifest("meshes")
    keep = [it for it in items if it["split"] in ("train", "val") and it["faces"] <= 12]
    assert slim_copy(tmp_path, max_faces=12) == len(keep)
    monkeypatch.setenv("GENSTUDIO_DATA", str(tmp_path))
    copied = load_manifest("meshes")
    assert [it["id"] for it in copied] == [it["id"] for it in keep]
    for a, b in zip(copied, keep):
        assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()


def test_meshes_source_without_pip_is_a_clear_error(monkeypatch, tmp_path):
    from genstudio.data import DataError, prepare
    import genstudio.data.mesh_sources as mesh_sources
    import pipelines.mesh.data  # noqa: F401  (registers the source)

    def no_pip(cmd, **kw):
        return SimpleNamespace(returncode=1, stdout="", stderr=f"{cmd[0]}: No module named pip")
    monkeypatch.setattr(mesh_sources.subprocess, "run", no_pip)
    with pytest.raises(DataError, match="needs pip"):
        prepare("meshes", root=tmp_path, quiet=True)
    assert not (tmp_path / "meshes").exists()


def test_dataset_augments_and_collates(meshes_built):
    from genstudio.data import load_manifest
    from pipelines.mesh.data import MeshDataset, collate_meshes
    items = sorted(load_manifest("meshes"), key=lambda it: it["id"])
    fixed = MeshDataset(items, num_points=128, augment=False)
    a, b = fixed[2], fixed[2]
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["points"], b["points"])
    assert a["input_ids"][0] == BOS and a["input_ids"][-1] == EOS and len(a["input_ids"]) == items[2]["tokens"] + 2
    assert a["points"].abs()[:, :3].max() == pytest.approx(0.9995, abs=1e-4)
    aug = MeshDataset(items, num_points=128, augment=True)[2]
    assert not torch.equal(aug["input_ids"], a["input_ids"])
    assert amt_decode(aug["input_ids"].numpy()).num_faces > 0
    batch = collate_meshes([fixed[0], fixed[4]])
    assert batch["points"].shape == (2, 128, 6) and batch["input_ids"].shape == batch["labels"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    v1 = collate_meshes([MeshDataset(items, "v1", 64, augment=False)[k] for k in (0, 4)])
    assert v1["faces"].shape == (2, max(items[0]["faces"], items[4]["faces"]), 9) and v1["face_mask"].sum() == \
        items[0]["faces"] + items[4]["faces"]


def test_recipe_trains_a_tiny_model_for_two_steps(meshes_built, tmp_path):
    from genstudio.train import train
    from pipelines.mesh.meshanything import MeshAnythingModel
    from pipelines.mesh.train import recipe
    r = recipe({"preset": "tiny", "steps": 2, "batch_size": 2, "output_dir": str(tmp_path / "run"), "progress": False,
                "max_faces": 64, "eval_items": 2, "mixed_precision": "no"})
    assert len(r.dataset) == len(r.lengths) >= 3 and max(r.lengths) <= 640
    summary = train(r)
    assert summary["steps"] == 2 and 0 <= summary["val_token_accuracy"] <= 1
    trained = MeshAnythingModel.from_pretrained(summary["final"])
    assert trained.config.max_faces == 64
    with pytest.raises(ValueError, match="unknown meshanything option"):
        recipe({"preset": "tiny", "colour": 1})
    # init_from: a new run starts from those weights, and its summary counts the steps behind them
    from genstudio.bench import training_steps
    again = recipe({"preset": "tiny", "max_faces": 64, "eval_items": 2, "output_dir": str(tmp_path / "run2"),
                    "init_from": str(tmp_path / "run"), "steps": 1, "batch_size": 2, "progress": False,
                    "mixed_precision": "no"})
    ref = trained.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in again.model.state_dict().items())
    continued = train(again)
    assert continued["init_steps"] == 2 and training_steps(tmp_path / "run2" / "final") == 3


def test_v1_vq_warmup_follows_the_trainer_step_across_a_resume(meshes_built, tmp_path):
    """The V1 warm-up (face VQ alone for vq_warmup steps) counts the trainer's steps, so a killed
    and resumed run brings the LM in at the same step as an unbroken one."""
    from genstudio.train import train
    from pipelines.mesh.train import recipe
    cfg = {"preset": "tiny", "tokenization": "v1", "vq_warmup": 3, "batch_size": 2, "max_faces": 64,
           "output_dir": str(tmp_path / "run"), "eval_items": 1, "log_every": 1, "save_every": 100,
           "mixed_precision": "no", "ema_decay": None, "progress": False}
    train(recipe({**cfg, "steps": 2}))   # killed after step 2 ...
    train(recipe({**cfg, "steps": 5}))   # ... and resumed: steps 3 to 5
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [("lm_loss" in r) for r in rows] == [False, False, False, True, True]


# ---- pipeline, CLI ----

def test_pipeline_writes_the_memorised_cube_from_any_input_kind(tiny_mesh_model, tmp_path):
    from pipelines.mesh.pipeline import MeshAnythingPipeline
    pipe = MeshAnythingPipeline.from_pretrained(str(tiny_mesh_model.folder), device="cpu")
    cube = trimesh.creation.box()
    scaled = cube.copy()
    scaled.apply_scale(3.0)
    scaled.apply_translation([5, 0, 0])
    out = pipe(scaled, seed=0)
    assert not out.failed and out.num_faces == 12 and out.num_vertices == 8, out.message
    assert np.allclose(out.mesh.bounds, scaled.bounds, atol=0.1)  # mapped back into the input's frame
    assert out.mesh.is_watertight and out.mesh.volume > 0 and len(out.tokens) == 63
    points, face_index = trimesh.sample.sample_surface(cube, 600, seed=1)
    with_normals = np.concatenate([points, cube.face_normals[face_index]], 1)
    for source in (tiny_mesh_model.obj, np.asarray(points), with_normals):
        assert pipe(source, max_faces=64).num_faces > 0
    limited = pipe(cube, max_faces=3)
    assert limited.num_faces <= 3 and "limit" in limited.message
    for suffix in (".obj", ".glb", ".ply"):
        path = out.save(tmp_path / f"out{suffix}")
        assert len(trimesh.load(path, force="mesh").faces) == 12
    with pytest.raises(InputError, match="should end in"):
        out.save(tmp_path / "out.txt")


def test_surface_fit_moves_vertices_onto_the_target_and_keeps_faces():
    """fit_to_points: an inflated, shifted sphere is pulled onto points of the unit sphere (Chamfer
    falls several-fold), faces untouched, any scale (it works in the target's box); 0 steps = no-op."""
    from genstudio.metrics import chamfer_distance
    from pipelines.mesh.fit import MAX_FIT_STEPS, fit_to_points
    sphere = trimesh.creation.icosphere(subdivisions=2)
    target = trimesh.sample.sample_surface(sphere, 3000, seed=0)[0]
    for scale in (1.0, 50.0):
        start = (sphere.vertices * 1.3 + [0.2, 0.0, 0.0]) * scale
        moved = fit_to_points(start, sphere.faces, target * scale, steps=100, lr=0.01, samples=512, seed=0)
        before = chamfer_distance(trimesh.Trimesh(start, sphere.faces).sample(3000), target * scale)
        after = chamfer_distance(trimesh.Trimesh(moved, sphere.faces).sample(3000), target * scale)
        assert moved.shape == start.shape and after < before / 3, (scale, before, after)
    assert np.array_equal(fit_to_points(start, sphere.faces, target, steps=0), start)
    with pytest.raises(ValueError, match="fit steps"):
        fit_to_points(start, sphere.faces, target, steps=MAX_FIT_STEPS + 1)


def test_pipeline_surface_fit_keeps_the_model_mesh_and_reports_it(tiny_mesh_model):
    """fit_steps > 0: the kept mesh's vertices are fitted to the input (same faces; the decoder's
    vertices stay in extra), 0 = the decoder's mesh exactly; out of range -> one-line error."""
    from pipelines.mesh.pipeline import MeshAnythingPipeline
    pipe = MeshAnythingPipeline(tiny_mesh_model.model)
    cube = trimesh.creation.box()
    cube.apply_scale([1.0, 1.4, 0.8])  # the memorised cube is not this box: the fit has work to do
    plain = pipe(cube, seed=0, fit_steps=0)
    fitted = pipe(cube, seed=0, fit_steps=40)
    assert "unfitted_vertices" not in plain.extra and "fitted" not in plain.message
    assert np.array_equal(fitted.faces, plain.faces) and "fitted to the input" in fitted.message
    assert np.allclose(fitted.extra["unfitted_vertices"], plain.vertices)
    assert not np.allclose(fitted.vertices, plain.vertices)
    assert np.abs(fitted.mesh.bounds - cube.bounds).sum() < np.abs(plain.mesh.bounds - cube.bounds).sum()
    with pytest.raises(InputError, match="fit_steps"):
        pipe(cube, seed=0, fit_steps=-1)


def test_candidates_keep_the_draw_nearest_the_input(tiny_mesh_model, monkeypatch):
    """num_candidates=N generates N rows in one batch and keeps the one whose surface is nearest the
    input points: here the planted draws are a wrong half of the cube, nothing, and the cube."""
    from pipelines.mesh.pipeline import MeshAnythingPipeline, distance_to_input
    pipe = MeshAnythingPipeline(tiny_mesh_model.model)
    cube = trimesh.creation.box()
    full = torch.tensor(amt_encode(tiny_mesh_model.target))
    half = torch.tensor(amt_encode(quantize_mesh(cube.vertices, cube.faces[:4])))
    seen = {}

    def planted(points, **kwargs):
        seen["batch"] = points.shape[0]
        return [half, torch.zeros(0, dtype=torch.long), full][: points.shape[0]]
    monkeypatch.setattr(pipe.model, "generate_tokens", planted)
    out = pipe(cube, seed=0, temperature=1.0, num_candidates=3)
    assert seen["batch"] == 3 and out.num_faces == 12 and "nearest the input of 3 draws" in out.message
    assert pipe(cube, seed=0, temperature=0.0, num_candidates=3).num_faces == 4  # greedy: one draw, the first row
    assert seen["batch"] == 1
    points = trimesh.sample.sample_surface(cube, 500, seed=0)[0]
    assert distance_to_input(cube, points) < distance_to_input(trimesh.Trimesh(cube.vertices, cube.faces[:4]), points)
    assert distance_to_input(trimesh.Trimesh(np.zeros((3, 3)), [[0, 1, 2]]), points) == float("inf")
    for bad in (0, 17):
        with pytest.raises(InputError, match="candidates"):
            pipe(cube, temperature=1.0, num_candidates=bad)


def test_the_checkpoint_names_the_default_decoding(tiny_mesh_model):
    """temperature=None follows the config's default_temperature (greedy when absent); an explicit one wins."""
    from pipelines.mesh.meshanything import MeshAnythingConfig
    from pipelines.mesh.pipeline import MeshAnythingPipeline
    pipe = MeshAnythingPipeline(tiny_mesh_model.model)
    cube = trimesh.creation.box()
    assert MeshAnythingConfig().default_temperature == 0.0
    assert pipe(cube, seed=0).message.startswith("greedy")
    pipe.model.config.default_temperature = 1.5
    try:
        sampled = pipe(cube, seed=0)
        assert sampled.message.startswith("sampled (T=1.5") and sampled.num_faces >= 1
        assert pipe(cube, seed=0, temperature=0).message.startswith("greedy")
    finally:
        pipe.model.config.default_temperature = 0.0


def test_greedy_that_loops_falls_back_to_sampling(tiny_mesh_model, monkeypatch):
    """A greedy decode stuck on one vertex (no faces) is retried with the reference's sampling mode,
    and the message says so; with fallback=False it fails clearly instead."""
    from pipelines.mesh.pipeline import MeshAnythingPipeline
    pipe = MeshAnythingPipeline.from_pretrained(str(tiny_mesh_model.folder), device="cpu")
    real, calls = pipe.model.generate_tokens, []

    def stuck_when_greedy(points, **kw):
        calls.append(kw["do_sample"])
        if not kw["do_sample"]:  # one vertex over and over: parses to degenerate faces only
            return torch.tensor([[3 + 10, 3 + 20, 3 + 30] * 12])
        return real(points, **kw)

    monkeypatch.setattr(pipe.model, "generate_tokens", stuck_when_greedy)
    out = pipe(trimesh.creation.box(), seed=0)
    assert calls == [False, True] and not out.failed and out.num_faces > 0
    assert out.message.startswith("greedy decoding gave no faces, so sampled")
    assert out.input_faces == 12  # the box's, not the remeshed surface's the retry decoded from
    calls.clear()
    fitted = pipe(trimesh.creation.box(), seed=0, fit_steps=5, marching_cubes=True)  # the retry keeps the fit
    assert calls == [False, True] and "fitted to the input's surface (5 steps)" in fitted.message
    assert "unfitted_vertices" in fitted.extra and fitted.input_faces == 12
    strict = pipe(trimesh.creation.box(), seed=0, fallback=False)
    assert strict.failed and "no faces" in strict.message and strict.num_faces == 0


def test_bad_inputs_raise_clear_input_errors(tmp_path):
    from genstudio.formats.mesh import load_mesh_input
    garbage = tmp_path / "garbage.glb"
    garbage.write_bytes(b"\x00\x01not a mesh")
    nan = np.ones((50, 3))
    nan[3, 1] = np.nan
    cases = [(tmp_path / "missing.obj", "does not exist"), (garbage, "not a readable mesh"),
             (trimesh.Trimesh(), "empty"), (nan, "NaN"), (np.zeros((50, 3)), "all points coincide"),
             (np.zeros((50, 4)), "expected points of shape"), (np.ones((3, 3)), "at least"),
             (trimesh.Trimesh([[0, 0, 0], [1, 1, 1], [2, 2, 2]], [[0, 1, 2]]), "degenerate"),
             (tmp_path / "notes.txt", "does not exist")]
    (tmp_path / "table.csv").write_text("1,2,3\n")
    cases.append((tmp_path / "table.csv", "unknown file type"))
    for source, message in cases:
        with pytest.raises(InputError, match=message):
            load_mesh_input(source)


def _cli_in_process(args, capsys, monkeypatch):
    import genstudio.cli as cli
    monkeypatch.setattr(sys, "argv", ["genstudio", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code, capsys.readouterr().err


def test_cli_writes_a_mesh_and_gives_one_line_errors(tiny_mesh_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cube_out.obj"
    r = subprocess.run([sys.executable, "-m", "genstudio.cli", "--device", "cpu", "mesh", "--input",
                        str(tiny_mesh_model.obj), "-o", str(out), "--model", str(tiny_mesh_model.folder),
                        "--marching-cubes", "--seed", "0"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "#V=8 #F=12" in r.stderr and "input #F=12" in r.stderr
    assert len(trimesh.load(out, force="mesh").faces) == 12
    nan_npy = tmp_path / "nan.npy"
    np.save(nan_npy, np.full((40, 6), np.nan))
    bad = [(["--input", tmp_path / "missing.ply"], "does not exist"), (["--input", nan_npy], "NaN"),
           (["--input", tiny_mesh_model.obj, "-o", tmp_path / "x.txt"], "should end in"),
           (["--input", tiny_mesh_model.obj, "-o", tmp_path / "x.obj", "--model", tmp_path / "no-ckpt"],
            "neither a local folder")]
    for args, message in bad:
        code, err = _cli_in_process(["mesh", *args], capsys, monkeypatch)
        assert code == 1 and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 3, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube_out.obj", "nan.npy"]


def test_cli_folder_mode_writes_each_mesh_skips_finished_ones_and_reports_bad_ones(tiny_mesh_model, tmp_path):
    from cli_runner import run_genstudio
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.obj").write_bytes(tiny_mesh_model.obj.read_bytes())
    (src / "b.obj").write_bytes(tiny_mesh_model.obj.read_bytes())
    np.save(src / "bad.npy", np.full((40, 3), np.nan))
    args = ("--device", "cpu", "mesh", "-i", src, "-o", out, "--model", tiny_mesh_model.folder, "--marching-cubes")
    r = run_genstudio(*args)
    assert r.returncode == 1 and "2 done, 0 skipped (already there), 1 failed" in r.stderr, r.stderr
    assert "bad.npy (" in r.stderr and "NaN" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.obj", "b.obj"]
    (src / "bad.npy").unlink()
    first = (out / "a.obj").stat().st_mtime_ns
    r = run_genstudio(*args)
    assert r.returncode == 0 and "0 done, 2 skipped" in r.stderr and (out / "a.obj").stat().st_mtime_ns == first


# ---- benchmark, app ----

def test_bench_quick_with_a_tiny_model(tiny_mesh_model, meshes_built, tmp_path, monkeypatch):
    from genstudio.bench import Report
    from pipelines.mesh.bench import bench_mesh
    root = tmp_path / "data"
    (root / "meshes").mkdir(parents=True)
    rows = [json.loads(line) for line in (meshes_built / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        row["split"], row["path"] = "test", str(meshes_built / row["path"])
    (root / "meshes" / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setenv("GENSTUDIO_DATA", str(root))
    report = Report("mesh", tmp_path / "out")
    bench_mesh(report, quick=True, model=str(tiny_mesh_model.folder), max_faces=24, resolution=32,
               decoding="greedy,sampled,default", candidates="1,2")
    by_method = {r["method"]: r for r in report.rows}
    assert {"ours-greedy", "mc+qem@ours-greedy", "ours-sampled", "mc+qem@gt", "mc-dense"} <= set(by_method)
    assert "ours-sampled-best2" in by_method and "ours-greedy-best2" not in by_method  # greedy: one draw only
    assert by_method["ours-greedy"]["n"] == 3 and by_method["ours-greedy"]["faces"] <= 24
    assert by_method["ours-sampled"]["faces"] <= 24 or by_method["ours-sampled"]["n"] == 0
    # decimated to the same count
    assert by_method["mc+qem@ours-greedy"]["faces"] == by_method["ours-greedy"]["faces"]
    assert by_method["mc-dense"]["chamfer"] < 0.03 and by_method["mc-dense"]["faces"] > 1000
    assert any("ours = MeshAnything" in n for n in report.notes)
    # "default" decodes as the checkpoint says: this one names no default_temperature, so greedily
    row = by_method["ours-default"]
    assert (row["chamfer"], row["faces"]) == (by_method["ours-greedy"]["chamfer"], by_method["ours-greedy"]["faces"])
    assert any("default = the checkpoint's default_temperature and default_candidates, 0.0 and 1" in n
               for n in report.notes)
    _, md = report.write()
    assert "| urdf-test | mc+qem@gt |" in md.read_text()
    skipped = Report("mesh", tmp_path / "out2")
    bench_mesh(skipped, quick=True, model=str(tmp_path / "no-ckpt"), resolution=32)
    assert {r["method"] for r in skipped.rows} == {"mc+qem@gt", "mc-dense"}
    assert any(n.startswith("ours skipped") for n in skipped.notes)
    with pytest.raises(ValueError, match="decoding"):
        bench_mesh(Report("mesh", tmp_path / "out3"), quick=True, model=str(tiny_mesh_model.folder), decoding="beam")


def test_app_convert_and_examples(tiny_mesh_model):
    pytest.importorskip("gradio")
    from apps.mesh import EXAMPLES, convert
    examples = sorted(EXAMPLES.glob("*.obj"))
    assert len(examples) == 2 and (EXAMPLES / "LICENSES.md").exists()
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir()) < 200_000
    path, info, downloads = convert(str(examples[0]), max_faces=64, seed=0, model=str(tiny_mesh_model.folder))
    faces = len(trimesh.load(path, force="mesh").faces)
    assert path.endswith(".glb") and faces > 0 and info.startswith(f"{faces} faces and ") and "{" not in info
    import re
    assert int(re.search(r"the input had (\d+) faces", info).group(1)) > 0 and " s." in info
    assert [d[-4:] for d in downloads] == [".glb", ".obj"] and downloads[0] == path  # GLB and OBJ
    assert len(trimesh.load(downloads[1], force="mesh").faces) == faces
    with pytest.raises(ValueError, match="Upload a mesh"):
        convert(None)
