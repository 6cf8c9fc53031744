"""The Semantic Sharing model and its ablations: shapes, gradients, padding, masking."""

import numpy as np
import pytest
import torch

from semshare.data.batches import TrainingBatches
from semshare.data.dataset import open_dataset
from semshare.methods.losses import discrimination_loss, label_prediction_loss
from semshare.training.experiment import prepare_run
from semshare.training.recipes import recipe_names, resolve_config

# Semantic Sharing's sizes under models: so the same overrides serve every method
TINY_MODEL = {"models.semantic_sharing.dim": 16, "models.semantic_sharing.layers": 1, "models.semantic_sharing.heads": 2,
              "models.semantic_sharing.ffn_dim": 32, "models.semantic_sharing.dropout": 0.0,
              "text.word_dim": 8, "text.word2vec_epochs": 1, "train.batch_size": 8}
SS_RECIPES = [name for name in recipe_names() if resolve_config(name).method == "semantic_sharing"]


def tiny_run(data_dir, run_dir, method="ours", **extra):
    cfg = resolve_config(method, "small", overrides={**TINY_MODEL, **extra})
    return prepare_run(open_dataset(data_dir), cfg, run_dir)


def first_batch(run, training=True, seed=0):
    batches = TrainingBatches(run.builder(training), run.train_rows, run.cfg.train.batch_size, seed)
    return next(iter(batches.epoch(0)))


@pytest.mark.parametrize("method", SS_RECIPES)
def test_every_preset_builds_steps_and_every_parameter_learns(tiny_data_dir, tmp_path, method):
    run = tiny_run(tiny_data_dir, tmp_path / method, method, **{"model.loss.mask_prob": 0.5, "train.batch_size": 16})
    batch = first_batch(run)
    losses = run.model.training_step(batch)
    assert torch.isfinite(losses["loss"]) and losses["loss"].requires_grad
    losses["loss"].backward()
    for name, param in run.model.named_parameters():
        assert param.grad is not None, f"{method}: {name} got no gradient"
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{method}: {name} has an all-zero gradient"
    run.model.eval()
    img, txt = run.model.encode_image(batch), run.model.encode_text(batch)
    assert img.shape == txt.shape and img.shape[0] == len(batch)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()


@pytest.mark.parametrize("text_source", ["words", "segments"])
def test_paired_passes_share_psi1_and_the_gru_and_change_no_loss_or_gradient(tiny_data_dir, tmp_path, monkeypatch,
                                                                             text_source):
    """A modality's clean and masked pass are one encoder call: psi1 of the regions (and of token states) runs
    once, the word GRU once over both token copies; without dropout, the losses and gradients equal each pass
    computed alone (psi1 / the GRU called per pass)."""
    from semshare.methods.semantic_sharing import SemanticSharing
    from semshare.models.text_encoders import WordGRUEncoder

    extra = {"model.loss.mask_prob": 0.5, "model.loss.context_weight": 0.5}
    if text_source == "segments":  # random token states, as extract-text writes them (no encoder needed)
        from semshare.data.dataset import open_dataset
        from test_text_segments import write_fake_segments

        segments = write_fake_segments(tmp_path / "seg", int(open_dataset(tiny_data_dir).caption_offsets[-1]))
        extra.update({"text.source": "minilm", "text.segments_dir": str(segments)})
    run = tiny_run(tiny_data_dir, tmp_path / "r", **extra)
    model = run.model
    batch = first_batch(run)
    assert batch.img_masked.any() and batch.txt_masked.any() and model.region_head is not None and model.word_head is not None
    gru_rows = []
    real_states = WordGRUEncoder.recurrent_states
    monkeypatch.setattr(WordGRUEncoder, "recurrent_states", lambda self, *a, **k: gru_rows.append(len(a[0])) or real_states(self, *a, **k))
    psi1_calls = []
    hooks = [model.img_encoder.project.psi1.register_forward_hook(lambda *_: psi1_calls.append("image"))]
    if text_source == "segments":
        hooks.append(model.txt_encoder.project.psi1.register_forward_hook(lambda *_: psi1_calls.append("text")))

    def step(batched: bool):
        monkeypatch.setattr(SemanticSharing, "batch_passes", batched)
        gru_rows.clear(), psi1_calls.clear()
        model.zero_grad()
        losses = model.training_step(batch)
        losses["loss"].backward()
        return {k: v.detach() for k, v in losses.items()}, {n: p.grad.clone() for n, p in model.named_parameters()}

    paired_losses, paired_grads = step(True)
    if text_source == "words":
        assert gru_rows == [2 * len(batch)] and psi1_calls == ["image"]
    else:
        assert gru_rows == [] and sorted(psi1_calls) == ["image", "text"]
    separate_losses, separate_grads = step(False)
    if text_source == "words":
        assert gru_rows == [len(batch), len(batch)] and psi1_calls == ["image", "image"]
    else:
        assert sorted(psi1_calls) == ["image", "image", "text", "text"]
    assert set(paired_losses) == set(separate_losses) >= {"label_image", "label_text", "context_image", "context_text"}
    for name in separate_losses:
        torch.testing.assert_close(paired_losses[name], separate_losses[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in separate_grads:
        torch.testing.assert_close(paired_grads[name], separate_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("method,extra", [("ours", {}), ("st", {}), ("ours", {"models.semantic_sharing.pooling": "cls"}),
                                          ("wo_t", {})])
def test_batched_shared_passes_change_no_loss_or_gradient(tiny_data_dir, tmp_path, monkeypatch, method, extra):
    """A step's passes: paired per modality, then one `forward_many` call per branch; without dropout, the
    losses and gradients of each pass computed alone (to float rounding), for every kind of shared model."""
    from semshare.methods.semantic_sharing import SemanticSharing

    run = tiny_run(tiny_data_dir, tmp_path / "r", method, **{"model.loss.mask_prob": 0.5, "model.loss.context_weight": 0.5,
                                                             "models.semantic_sharing.layers": 2, **extra})
    model, batch = run.model, first_batch(run)

    def step(batched: bool):
        monkeypatch.setattr(SemanticSharing, "batch_passes", batched)
        model.zero_grad()
        losses = model.training_step(batch)
        losses["loss"].backward()
        return {k: v.detach() for k, v in losses.items()}, {n: p.grad.clone() for n, p in model.named_parameters()}

    (batched_losses, batched_grads), (separate_losses, separate_grads) = step(True), step(False)
    assert set(batched_losses) == set(separate_losses) and len(batched_losses) >= 3
    for name in separate_losses:
        torch.testing.assert_close(batched_losses[name], separate_losses[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in separate_grads:
        torch.testing.assert_close(batched_grads[name], separate_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", ["ours", "st"])
def test_a_step_under_cpu_bf16_autocast_learns_everywhere(tiny_data_dir, tmp_path, method):
    """`train.precision=bf16` on CPU: the batched passes, the GRU recurrence and dropout under autocast."""
    run = tiny_run(tiny_data_dir, tmp_path / "r", method, **{"model.loss.mask_prob": 0.5,
                                                             "models.semantic_sharing.dropout": 0.1})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = run.model.training_step(first_batch(run))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and {"context_image", "context_text"} <= set(losses)
    for name, param in run.model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_shared_transformer_equals_torchs_encoder_on_every_real_segment():
    """forward_many runs torch's TransformerEncoderLayer weights over the real segments of several batches at
    once: each batch's outputs equal torch's own padded forward (eval; and training without dropout, with the
    same gradients), padding rows are 0."""
    from semshare.models.shared_encoder import TransformerSharedEncoder

    torch.manual_seed(0)
    encoder = TransformerSharedEncoder(16, 2, 4, 32, 0.0)
    batches = []
    for items, length in ((5, 3), (4, 7), (6, 1)):
        mask = torch.arange(length) < torch.randint(1, length + 1, (items, 1))
        batches.append((torch.randn(items, length, 16, requires_grad=True), mask))

    def torchs(segments, mask):
        return encoder.norm(encoder.blocks(segments, src_key_padding_mask=~mask))

    for training in (False, True):
        encoder.train(training)
        outputs = encoder.forward_many(batches)
        for (segments, mask), output in zip(batches, outputs):
            expected = torchs(segments, mask)
            torch.testing.assert_close(output[mask], expected[mask], rtol=1e-5, atol=1e-5)
            assert (output[~mask] == 0).all()
        if training:
            ours = torch.autograd.grad(sum((o * o).sum() for o in outputs), list(encoder.parameters()))
            reference = sum(((torchs(s, m) * m.unsqueeze(-1)) ** 2).sum() for s, m in batches)
            for got, expected in zip(ours, torch.autograd.grad(reference, list(encoder.parameters()))):
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_own_gru_recurrence_equals_torchs_packed_bigru(monkeypatch):
    """The CPU word encoder's BiGRU (hand-written backward, reversed rows for the backward direction) gives the
    states of torch's packed nn.GRU and the same gradients, for rows of every length, a row without a real
    token (clamped to one, as packing does) and padding columns beyond the longest row."""
    from semshare.models.text_encoders import WordGRUEncoder

    torch.manual_seed(0)
    encoder = WordGRUEncoder(np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32), 10, 2)
    lengths = torch.tensor([7, 1, 4, 0, 7, 2])
    mask = torch.arange(9) < lengths.unsqueeze(1)
    tokens = torch.randint(4, 40, mask.shape).masked_fill(~mask, 0)
    weights = torch.randn(len(tokens), 9, 10)

    def run(own: bool):
        monkeypatch.setattr(WordGRUEncoder, "own_recurrence", own)
        encoder.zero_grad()
        states = encoder.recurrent_states(tokens, mask)
        (states * weights).sum().backward()
        return states.detach(), {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}

    (ours, our_grads), (torchs, torch_grads) = run(True), run(False)
    torch.testing.assert_close(ours, torchs, rtol=1e-5, atol=1e-6)
    assert (ours[:, 7:] == 0).all() and (ours[1, 1:] == 0).all() and (ours[3, 0] != 0).all()
    assert set(our_grads) == set(torch_grads) and len(torch_grads) == 9
    for name in torch_grads:
        torch.testing.assert_close(our_grads[name], torch_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_cpu_dropout_keeps_1_minus_p_scaled_and_repeats_per_seed():
    from semshare.models.layers import DROP_STEPS, Dropout, dropout

    x = torch.ones(1000, 1001)
    torch.manual_seed(0)
    out = dropout(x, 0.1, True)
    dropped = round(0.1 * DROP_STEPS)
    kept = out != 0
    # the kept fraction within 5 sigma of 1 - p (p rounded to 1/65536), kept values scaled exactly
    assert abs(kept.float().mean().item() - (1 - dropped / DROP_STEPS)) < 5 * (0.1 * 0.9 / x.numel()) ** 0.5
    assert torch.equal(out[kept], torch.full((int(kept.sum()),), DROP_STEPS / (DROP_STEPS - dropped)))
    assert kept[:, -1].float().mean().item() == pytest.approx(0.9, abs=0.05)  # the last, partial word too
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1, True), out)  # same seed, same mask
    assert not torch.equal(dropout(x, 0.1, True), out)
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    y = torch.randn(7, 5, requires_grad=True)
    torch.manual_seed(1)
    (grad,) = torch.autograd.grad(dropout(y, 0.5, True).sum(), y)
    torch.manual_seed(1)
    assert torch.equal(grad, dropout(torch.ones(7, 5), 0.5, True))
    module = Dropout(0.3)
    assert repr(module) == repr(torch.nn.Dropout(0.3)) and module.eval()(x) is x


def test_masked_prediction_loss_scores_only_masked_positions_with_the_dense_value():
    """The context loss runs its head on the masked positions only: the value and gradients equal the dense
    form (every position scored, the unmasked ones multiplied by 0), an item without a masked one counting 0."""
    import torch.nn.functional as F

    from semshare.methods.semantic_sharing import _per_item_masked_ce

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50)
    hidden = torch.randn(6, 9, 16, requires_grad=True)
    targets = torch.randint(-1, 50, (6, 9))
    masked = (torch.rand(6, 9) < 0.3) & (targets >= 0)
    masked[2] = False
    calls = []
    hook = head.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    losses = F.cross_entropy(head(hidden).flatten(0, 1), targets.clamp_min(0).flatten(), reduction="none")
    losses = losses.view(masked.shape) * masked
    dense = (losses.sum(1) / masked.sum(1).clamp_min(1)).mean()
    dense_grads = torch.autograd.grad(dense, [hidden, head.weight])
    sparse = _per_item_masked_ce(head, hidden, targets, masked)
    sparse_grads = torch.autograd.grad(sparse, [hidden, head.weight])
    hook.remove()
    assert calls[1] == int(masked.sum()) < masked.numel()
    torch.testing.assert_close(sparse, dense)
    for got, expected in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(got, expected)


def test_padding_never_changes_a_result(tiny_data_dir, tmp_path):
    run = tiny_run(tiny_data_dir, tmp_path / "r")
    run.model.eval()
    batch = first_batch(run, training=False)
    with torch.no_grad():
        img, txt = run.model.encode_image(batch), run.model.encode_text(batch)
        # garbage in every padded slot, and extra padded slots
        pad_regions = ~batch.img_mask
        batch.img_regions[pad_regions] = 1e3
        batch.img_boxes[pad_regions] = 0.5
        batch.txt_tokens[~batch.txt_mask] = 7
        assert pad_regions.any() and (~batch.txt_mask).any()
        torch.testing.assert_close(run.model.encode_image(batch), img)
        torch.testing.assert_close(run.model.encode_text(batch), txt)
        longer = batch
        longer.txt_tokens = torch.cat([batch.txt_tokens, torch.full((len(batch), 3), 5)], 1)
        longer.txt_mask = torch.cat([batch.txt_mask, torch.zeros(len(batch), 3, dtype=torch.bool)], 1)
        longer.txt_masked = torch.cat([batch.txt_masked, torch.zeros(len(batch), 3, dtype=torch.bool)], 1)
        torch.testing.assert_close(run.model.encode_text(longer), txt)


def test_masking_replaces_exactly_the_chosen_inputs(tiny_data_dir, tmp_path):
    run = tiny_run(tiny_data_dir, tmp_path / "r", **{"model.loss.mask_prob": 0.5})
    batch = first_batch(run)
    assert batch.img_masked.any() and batch.txt_masked.any()
    assert not (batch.img_masked & ~batch.img_mask).any() and not (batch.txt_masked & ~batch.txt_mask).any()
    assert (batch.img_region_targets[batch.img_masked] >= 0).all()  # targets line up with real regions
    # targets of masked tokens are the original tokens (the model swaps in MASK itself)
    assert (batch.txt_tokens[batch.txt_masked] > 3).all()
    encoder = run.model.img_encoder.project
    with torch.no_grad():
        clean = encoder.psi1(batch.img_regions)
        mixed = torch.where(batch.img_masked.unsqueeze(-1), encoder.mask_embedding, clean)
        expected = encoder.phi(mixed + encoder.psi2(batch.img_boxes))
        run.model.eval()
        torch.testing.assert_close(run.model.img_encoder(batch.img_regions, batch.img_boxes, batch.img_masked), expected)
    # an unmasked segment's input is untouched; a masked one changes
    changed = (run.model.img_encoder(batch.img_regions, batch.img_boxes, batch.img_masked)
               - run.model.img_encoder(batch.img_regions, batch.img_boxes)).abs().sum(-1) > 0
    assert torch.equal(changed, batch.img_masked)


def test_masking_is_deterministic_per_item(tiny_data_dir, tmp_path):
    run = tiny_run(tiny_data_dir, tmp_path / "r", **{"model.loss.mask_prob": 0.3})
    a, b = first_batch(run, seed=5), first_batch(run, seed=5)
    assert torch.equal(a.img_masked, b.img_masked) and torch.equal(a.txt_tokens, b.txt_tokens)


def test_label_losses_on_fixed_tensors():
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.5]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected_bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    torch.testing.assert_close(label_prediction_loss(logits, labels, "bce"), expected_bce)
    # Eq. 4 with y in {-1, +1}: log(1 + exp(-y^T g))
    expected_eq4 = (np.log1p(np.exp(-(2.0 + 1.0))) + np.log1p(np.exp(-(0.0 + 0.5)))) / 2
    assert label_prediction_loss(logits, labels, "eq4").item() == pytest.approx(expected_eq4, rel=1e-6)


def test_discrimination_loss_matches_eq1():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cos = lambda a, b: float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    S = np.eye(2)

    def term(a, b):
        return np.mean([[np.log1p(np.exp(0.5 * cos(a[i], b[j]))) - S[i, j] * 0.5 * cos(a[i], b[j]) for j in range(2)]
                        for i in range(2)])

    expected = term(img.numpy(), txt.numpy()) + term(img.numpy(), img.numpy()) + term(txt.numpy(), txt.numpy())
    assert discrimination_loss(img, txt, labels).item() == pytest.approx(expected, rel=1e-6)


def test_kmeans_pseudo_classes_when_the_data_has_no_region_classes(tiny_data_dir, tmp_path):
    run = tiny_run(tiny_data_dir, tmp_path / "r", **{"model.loss.region_targets": "kmeans", "model.loss.kmeans_k": 1000,
                                                     "model.loss.mask_prob": 0.5})
    targets = run.region_targets
    mask = np.asarray(run.dataset.region_mask).astype(bool)
    assert (targets[~mask] == -1).all() and (targets[mask] >= 0).all()
    # 80 training items x ~4 regions support far fewer than 1000 classes: the count adapts
    assert run.model.spec.num_region_classes == targets.max() + 1 or targets.max() < run.model.spec.num_region_classes
    assert 2 <= run.model.spec.num_region_classes < 1000
    losses = run.model.training_step(first_batch(run))
    assert torch.isfinite(losses["context_image"])


def test_dscmr_builds_steps_and_every_parameter_learns(tiny_data_dir, tmp_path):
    run = tiny_run(tiny_data_dir, tmp_path / "dscmr", "dscmr", **{"model.hidden_dim": 16, "model.common_dim": 8})
    batch = first_batch(run)
    losses = run.model.training_step(batch)
    assert set(losses) == {"label_image", "label_text", "discrimination", "invariance", "loss"}
    losses["loss"].backward()
    for name, param in run.model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert run.model.encode_image(batch).shape == (len(batch), 8)


def test_dscmr_losses_equal_the_formulas():
    from semshare.methods.dscmr import invariance_loss, label_space_loss

    predicted = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # mean over items of ||p - y||_2: (sqrt(0.25 + 0.25) + sqrt(0 + 1)) / 2
    assert label_space_loss(predicted, labels).item() == pytest.approx((np.sqrt(0.5) + 1.0) / 2)
    u = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[0.0, 4.0], [0.0, 1.0]])
    assert invariance_loss(u, v).item() == pytest.approx((5.0 + 0.0) / 2, abs=1e-5)


def test_total_correlation_matches_linear_cca():
    from semshare.methods.cca import CCAConfig, fit_cca
    from semshare.methods.dcca import total_correlation

    rng = np.random.default_rng(0)
    z = rng.standard_normal((500, 2))
    x = np.hstack([z, rng.standard_normal((500, 1))]) + 0.3 * rng.standard_normal((500, 3))
    y = np.hstack([z @ rng.standard_normal((2, 2)), rng.standard_normal((500, 1))]) + 0.3 * rng.standard_normal((500, 3))
    ours = total_correlation(torch.from_numpy(x), torch.from_numpy(y), reg=1e-6).item()
    reference = fit_cca(x, y, CCAConfig(reg=1e-9))[1].sum()
    assert ours == pytest.approx(reference, rel=1e-3)


def test_dcca_trains_and_fits_its_retrieval_space(tiny_data_dir, tmp_path):
    run = tiny_run(tiny_data_dir, tmp_path / "dcca", "dcca", **{"model.hidden_dim": 16, "model.output_dim": 4,
                                                                   "train.batch_size": 32})
    batch = first_batch(run)
    losses = run.model.training_step(batch)
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in run.model.parameters())
    run.model.fit_retrieval(run.builder(False), run.train_rows)
    assert not torch.equal(run.model.img_proj, torch.eye(4))
    assert run.model.encode_text(batch).shape == (len(batch), 4)


def test_scml_phases_and_meta_update(tiny_data_dir, tmp_path):
    run = tiny_run(tiny_data_dir, tmp_path / "scml", "scml", **{"model.hidden_dim": 16, "model.common_dim": 8,
                                                                   "model.text_epochs": 1})
    model, batch = run.model, first_batch(run)
    model.on_epoch_start(0)
    assert set(model.training_step(batch)) == {"label_text", "loss"}  # phase 1: text only
    model.on_epoch_start(1)
    losses = model.training_step(batch)
    assert set(losses) == {"label_text", "label_image", "meta_text", "loss"}
    losses["loss"].backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # the meta term depends on the image network through the look-ahead classifier: its gradient reaches it
    model.zero_grad()
    losses = model.training_step(batch)
    losses["meta_text"].backward()
    assert model.img_net[0].weight.grad.abs().sum() > 0


def test_vilbert_from_scratch_trains_and_reranks(tiny_data_dir, tmp_path):
    from semshare.evaluation.embed import embed_rows
    from semshare.evaluation.protocols import evaluate_rows
    from semshare.evaluation.rerank import evaluate_pairwise_rows
    from semshare.evaluation.retrieval import MetricSpec

    run = tiny_run(tiny_data_dir, tmp_path / "vilbert", "vilbert",
                   **{"model.dim": 16, "model.heads": 2, "model.ffn_dim": 32, "model.dropout": 0.0})
    model, batch = run.model, first_batch(run)
    losses = model.training_step(batch)
    assert {"label_image", "label_text", "pair", "loss"} <= set(losses)
    losses["loss"].backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    model.eval()
    scores = model.score_pairs(batch, batch)
    assert scores.shape == (len(batch),) and ((scores > 0) & (scores < 1)).all()
    rows = run.dataset.split("test")
    spec = MetricSpec(ndcg_k=(500,), map_k=(None,))
    # a shortlist of 1 only swaps nothing: the re-ranked result equals the first stage exactly
    first_stage = evaluate_rows(run.dataset, *embed_rows(model, run.builder(False), rows), rows, "captions", spec)
    table, _ = evaluate_pairwise_rows(model, run.builder(False), run.dataset, rows, "captions", spec, shortlist=1)
    assert table == pytest.approx(first_stage, abs=1e-9)
    # a shortlist of the whole gallery ranks purely by the pair score
    full, _ = evaluate_pairwise_rows(model, run.builder(False), run.dataset, rows, "captions", spec, shortlist=10_000)
    assert 0 <= full["ave/NDCG@500"] <= 1


def test_rerank_with_the_whole_gallery_equals_ranking_by_pair_score(tiny_data_dir, tmp_path):
    from semshare.evaluation import metrics
    from semshare.evaluation.rerank import evaluate_pairwise_rows
    from semshare.evaluation.retrieval import MetricSpec

    run = tiny_run(tiny_data_dir, tmp_path / "vilbert", "vilbert",
                   **{"model.dim": 16, "model.heads": 2, "model.ffn_dim": 32, "model.dropout": 0.0})
    model = run.model.eval()
    ds, builder = run.dataset, run.builder(False)
    rows = ds.split("test")[:6]
    items = ds.text_items(rows)
    _, directions = evaluate_pairwise_rows(model, builder, ds, rows, "captions", MetricSpec(map_k=(None,)), 10_000)
    with torch.no_grad():
        pair = np.zeros((len(rows), len(items.rows)), dtype=np.float32)
        for i, row in enumerate(rows):
            batch = builder.build(np.full(len(items.rows), row), items.item_ids)
            pair[i] = model.score_pairs(batch, batch).numpy()
    labels = np.asarray(ds.labels, dtype=np.int64)
    gains = labels[rows] @ labels[items.rows].T
    np.testing.assert_allclose(directions["i2t"].per_query["mAP@all"], metrics.average_precision(pair, gains), atol=1e-6)


def test_batches_put_real_regions_first_wherever_they_are_stored(tiny_data_dir, tmp_path):
    """Regions stored with padding slots between them give the batches of the same regions stored real-first
    (the stable real-first order; real-first storage skips the reordering copy)."""
    import shutil

    shuffled = tmp_path / "holes"
    shutil.copytree(tiny_data_dir, shuffled)
    mask = np.load(tiny_data_dir / "region_mask.npy").astype(bool)
    assert all(row[: row.sum()].all() for row in mask)  # the generator writes real regions first
    rng = np.random.default_rng(0)
    slots = mask.shape[1]
    layout = np.empty(mask.shape, dtype=np.int64)  # new slot -> old slot
    for row, count in enumerate(mask.sum(1)):
        real_at = np.sort(rng.choice(slots, size=count, replace=False))
        layout[row, real_at] = np.arange(count)
        layout[row, np.setdiff1d(np.arange(slots), real_at)] = np.arange(count, slots)
    assert (layout != np.arange(slots)).any(axis=1).sum() > len(mask) // 2
    for name in ("regions.npy", "region_boxes.npy", "region_mask.npy", "region_labels.npy"):
        values = np.load(tiny_data_dir / name)
        np.save(shuffled / name, np.take_along_axis(values, layout.reshape(layout.shape + (1,) * (values.ndim - 2)), 1))
    batches = [first_batch(tiny_run(folder, tmp_path / f"run_{i}", **{"model.loss.mask_prob": 0.5}))
               for i, folder in enumerate((tiny_data_dir, shuffled))]
    for field in ("img_regions", "img_boxes", "img_mask", "img_region_targets", "img_masked"):
        torch.testing.assert_close(getattr(batches[1], field), getattr(batches[0], field), rtol=0, atol=0, msg=field)
    assert batches[0].img_masked.any()
