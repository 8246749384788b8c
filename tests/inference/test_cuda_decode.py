"""On a GPU (skipped elsewhere): the captured decode step gives the eager step's logits and tokens, the prefill on
the GPU kernels (Triton scan with an initial state) continues the cache exactly, bf16 decoding stays near fp32."""
import pytest
import torch
from test_decode import assert_close_per_position, block_model, check_all_paths, decode_steps

from hybrid.cuda_graph import GraphStep
from hybrid.model import HybridLM

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def exact_fp32():
    """No TF32 in matmuls or cuDNN's conv: fp32 comparisons at 1e-5."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def hybrid_model(dtype=torch.float32):
    torch.manual_seed(0)
    model = HybridLM(vocab_size=13, d_model=32, layout="MFAEMF",
                     blocks={"M": {"d_state": 8}, "A": {"n_heads": 4, "n_kv_heads": 2}, "E": {"n_experts": 3}})
    return model.cuda().to(dtype).eval()


@pytest.mark.parametrize("kind", ["mamba", "mamba-lti", "mamba-dt-bc-norm", "attention-rope-gqa", "moe"])
def test_gpu_paths_equal_the_parallel_forward(kind):
    check_all_paths(block_model(kind).cuda(), L=70)


@torch.no_grad()
def test_graph_step_equals_eager_step():
    model = hybrid_model()
    tokens = torch.randint(0, 13, (3, 40), device="cuda")
    eager_cache = model.allocate_inference_cache(3, 40)
    want = decode_steps(model, tokens, eager_cache)
    cache = model.allocate_inference_cache(3, 40)
    graph = GraphStep(model, cache)
    assert cache.seqlen == 0 and all(int(c.length) == 0 for c in cache.layers if hasattr(c, "length"))
    got = torch.stack([graph(tokens[:, t], cache).clone() for t in range(40)], 1)
    assert_close_per_position(got, want)
    assert cache.seqlen == 40


def test_generate_with_and_without_graph_same_tokens():
    model = hybrid_model()
    prompts = [torch.randint(0, 13, (n,)) for n in (7, 3, 12)]
    eager = model.generate(prompts, 20, cuda_graph=False)
    graph = model.generate(prompts, 20, cuda_graph=True)
    again = model.generate(prompts, 20, cuda_graph=True)  # the held graph, reused
    assert torch.equal(eager, graph) and torch.equal(graph, again)
    sampled = [model.generate(prompts, 20, temperature=1.0, top_p=0.9, seed=3, cuda_graph=g) for g in (False, True)]
    assert torch.equal(*sampled)


@torch.no_grad()
def test_bf16_decode_near_fp32():
    tokens = torch.randint(0, 13, (2, 50), device="cuda")
    want = hybrid_model()(tokens).logits
    model = hybrid_model(torch.bfloat16)
    got = decode_steps(model, tokens, model.allocate_inference_cache(2, 50)).float()
    err = ((got - want).norm() / want.norm()).item()
    assert err < 5e-2, err
