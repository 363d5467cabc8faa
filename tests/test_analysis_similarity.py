"""Look-alike ranking and identity clustering on synthetic embeddings with known groups."""

from __future__ import annotations

import numpy as np
import pytest

from charstudio.analysis.clustering import (
    DEFAULT_IDENTITY_DISTANCE,
    cluster_identities,
    cosine_distances,
)
from charstudio.analysis.similarity import (
    EmbeddingSet,
    centroid,
    lookalike_scores,
    rank_by_similarity,
    similarity_to,
)

DIM = 512


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def identities(
    sizes: list[int], spread: float, seed: int = 0
) -> tuple[dict[str, np.ndarray], list[set[str]]]:
    """Embeddings of ``len(sizes)`` people, ``sizes[i]`` images each, around random centres.

    ``spread`` is the noise scale relative to the unit centre: 0.6 gives same-person cosine
    distances around 0.25-0.3, while random centres in 512-d are ~1.0 apart.
    """
    rng = np.random.default_rng(seed)
    embeddings: dict[str, np.ndarray] = {}
    groups: list[set[str]] = []
    for person, size in enumerate(sizes):
        centre = unit(rng.standard_normal(DIM))
        group = set()
        for k in range(size):
            noise = rng.standard_normal(DIM) * spread / np.sqrt(DIM)
            key = f"p{person}-{k}"
            embeddings[key] = unit(centre + noise).astype(np.float32)
            group.add(key)
        groups.append(group)
    # Interleave the people so that nothing relies on input order.
    order = sorted(embeddings, key=lambda key: (int(key.split("-")[1]), key))
    return {key: embeddings[key] for key in order}, groups


def test_embedding_set_skips_images_without_a_face_and_normalizes() -> None:
    es = EmbeddingSet.from_mapping({1: [3.0, 4.0], 2: None, 3: [0.0, 2.0]})
    assert es.ids == (1, 3)
    assert np.allclose(np.linalg.norm(es.vectors, axis=1), 1.0)
    assert list(es.rows([3, 2, 1])) == [1, 0]
    assert len(EmbeddingSet.from_mapping({})) == 0


def test_ranking_puts_the_picks_person_first() -> None:
    embeddings, groups = identities([6, 6, 6], spread=0.6)
    es = EmbeddingSet.from_mapping(embeddings)
    picks = ["p1-0", "p1-1"]
    ranked = rank_by_similarity(es, picks)
    assert len(ranked) == 18
    assert {key for key, _ in ranked[:6]} == groups[1]
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    without = rank_by_similarity(es, picks, include_references=False)
    assert [k for k, _ in without] == [k for k, _ in ranked if k not in picks]


@pytest.mark.parametrize("method", ["centroid", "nearest", "mean"])
def test_every_method_separates_the_character(method: str) -> None:
    embeddings, groups = identities([5, 5, 5, 5], spread=0.6, seed=3)
    es = EmbeddingSet.from_mapping(embeddings)
    scores = lookalike_scores(es, ["p2-0", "p2-3"], method=method)  # type: ignore[arg-type]
    same = [scores[k] for k in groups[2]]
    other = [scores[k] for g in (groups[0], groups[1], groups[3]) for k in g]
    assert min(same) > max(other)
    assert all(-1.0 <= s <= 1.0 + 1e-6 for s in scores.values())


def test_similarity_edge_cases() -> None:
    es = EmbeddingSet.from_mapping({"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]})
    assert similarity_to(es, ["a"]) == pytest.approx([1.0, 0.0, np.sqrt(0.5)], abs=1e-6)
    assert centroid(es.vectors[:2]) == pytest.approx([np.sqrt(0.5)] * 2, abs=1e-6)
    assert lookalike_scores(es, ["a", "b"], method="nearest")["c"] == pytest.approx(
        np.sqrt(0.5), abs=1e-6
    )
    with pytest.raises(ValueError, match="none of the reference"):
        similarity_to(es, ["zzz"])
    with pytest.raises(ValueError, match="method"):
        similarity_to(es, ["a"], method="median")  # type: ignore[arg-type]


def test_ranking_288_images_is_one_product() -> None:
    # Sorting a 288-image project: checked for correctness here; its speed is benchmarked.
    rng = np.random.default_rng(7)
    es = EmbeddingSet.from_mapping({i: rng.standard_normal(DIM) for i in range(288)})
    ranked = rank_by_similarity(es, [0, 1, 2, 3, 4, 5, 6, 7])
    expected = es.vectors @ centroid(es.vectors[:8])
    assert [key for key, _ in ranked] == list(np.argsort(-expected, kind="stable"))


def test_clustering_recovers_known_identities() -> None:
    embeddings, groups = identities([7, 5, 3, 1], spread=0.6, seed=1)
    clusters = cluster_identities(EmbeddingSet.from_mapping(embeddings))
    assert [set(c) for c in clusters] == groups  # largest first, singletons included
    # Members keep the input order.
    order = list(embeddings)
    for cluster in clusters:
        assert cluster == sorted(cluster, key=order.index)


def test_clustering_threshold() -> None:
    embeddings, _ = identities([4, 4], spread=0.6, seed=2)
    es = EmbeddingSet.from_mapping(embeddings)
    assert len(cluster_identities(es, threshold=1.5)) == 1  # everyone is one person
    assert len(cluster_identities(es, threshold=0.01)) == 8  # nobody matches anybody
    assert 0.5 <= DEFAULT_IDENTITY_DISTANCE <= 0.7


def test_clustering_small_inputs() -> None:
    assert cluster_identities(EmbeddingSet.from_mapping({})) == []
    assert cluster_identities(EmbeddingSet.from_mapping({"x": [1.0, 0.0]})) == [["x"]]
    twins = EmbeddingSet.from_mapping({"x": [1.0, 0.0], "y": [1.0, 0.0]})
    assert cluster_identities(twins) == [["x", "y"]]


def test_cosine_distances_are_clipped_and_symmetric() -> None:
    v = unit(np.random.default_rng(0).standard_normal((5, 8)))
    d = cosine_distances(np.vstack([v, v[:1]]))
    assert np.all(d >= 0) and np.all(d <= 2)
    assert np.allclose(d, d.T) and np.allclose(np.diag(d), 0)
    assert d[0, 5] == pytest.approx(0.0, abs=1e-6)
