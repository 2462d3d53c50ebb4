import numpy as np
import pytest
import torch

import mmmask.cm3  # noqa: F401  (registers the CM3 components)
from mmmask.cm3.masking import cm3_unmask
from mmmask.config import get_cfg, load_cfg
from mmmask.registry import DATA_MAPPER_REGISTRY, GENERATIVE_MODEL_REGISTRY, META_ARCH_REGISTRY


def tiny_cfg(causal=False):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "CM3"
    cfg.INPUT.DATASET_MAPPER = "CM3DocumentMapper"
    cfg.DATASETS.TRAIN = ("shapes_ov_documents",)
    cfg.CM3.VQ.IMAGE_SIZE, cfg.CM3.VQ.DOWNSAMPLE = 32, 8
    cfg.CM3.VQ.HIDDEN_DIM, cfg.CM3.VQ.CODEBOOK_SIZE, cfg.CM3.VQ.CODEBOOK_DIM = 8, 16, 8
    cfg.CM3.N_LAYER, cfg.CM3.N_HEAD, cfg.CM3.N_EMBD, cfg.CM3.BLOCK_SIZE = 2, 2, 32, 160
    cfg.CM3.CAUSAL_ONLY = causal
    return cfg


def train_steps(model, batches, steps, lr=3e-3):
    """A minimal loop (tests only): AdamW over the batches; returns the loss of each step."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    out = []
    for i in range(steps):
        loss = sum(model(batches[i % len(batches)]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(float(loss))
    return out


@pytest.fixture(scope="module")
def batch():
    from mmmask.data.catalog import DatasetCatalog

    cfg = tiny_cfg()
    mapper = DATA_MAPPER_REGISTRY.get("CM3DocumentMapper")(cfg, False)
    recs = DatasetCatalog.get("shapes_ov_documents")
    return [mapper(recs[i]) for i in range(4)]


def test_registered_and_configs_load():
    assert "CM3" in META_ARCH_REGISTRY.names() and "VQTokenizer" in META_ARCH_REGISTRY.names()
    assert "CM3" in GENERATIVE_MODEL_REGISTRY.names()
    for name in ("vq", "cm3", "cm3_causal"):
        cfg = load_cfg(f"configs/shapes/{name}.yaml")
        assert cfg.INPUT.DATASET_MAPPER == "CM3DocumentMapper"
    assert load_cfg("configs/shapes/cm3_causal.yaml").CM3.CAUSAL_ONLY


def test_mapper_output(batch):
    d = batch[0]
    assert d["image"].shape == (3, 32, 32) and d["image"].dtype == torch.uint8
    assert isinstance(d["caption"], str) and d["caption"] and isinstance(d["cm3_seed"], int)


def test_sequences_recover_documents(batch):
    model = META_ARCH_REGISTRY.get("CM3")(tiny_cfg())
    v = model.vocab
    codes = model.vq.encode(batch[0]["image"][None])[0]
    kinds = set()
    for seed in range(40):
        ids, w = model.make_sequence(batch[0]["caption"], codes, seed)
        assert len(ids) <= model.transformer.config.block_size + 1
        doc = cm3_unmask(ids, sentinel_ids=v.sentinel_ids, eos_id=v.eos_id)
        cap, got = mmmask.cm3.parse_document(v, doc)
        assert got == codes.reshape(-1).tolist()
        assert cap in ("", batch[0]["caption"])
        kinds.add(sum(t in v.sentinel_ids for t in ids) // 2)
    assert 0 not in kinds and len(kinds) > 1
    causal = META_ARCH_REGISTRY.get("CM3")(tiny_cfg(causal=True))
    ids, _ = causal.make_sequence("a red star", codes, 0)
    assert not any(t in v.sentinel_ids for t in ids)


def test_few_steps_lower_the_loss(batch):
    torch.manual_seed(0)
    model = META_ARCH_REGISTRY.get("CM3")(tiny_cfg())
    model.eval()
    before = np.mean([o["nll"] for o in model(batch)])  # (an untrained VQ k-means-inits here)
    vq_before = {k: v.clone() for k, v in model.vq.state_dict().items()}
    losses = train_steps(model, [batch], 12, lr=1e-2)
    model.eval()
    after = np.mean([o["nll"] for o in model(batch)])
    assert after < before - 1.0 and losses[-1] < losses[0]
    for k, v in model.vq.state_dict().items():  # the tokenizer stays frozen
        assert torch.equal(v, vq_before[k]), k
