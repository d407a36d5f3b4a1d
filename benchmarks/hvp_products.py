"""One Hessian-vector product of the training loss, three ways, against one plain training step.

    python benchmarks/hvp_products.py [--threads 2] [--repeats 10]

On the digits CNN (batch 32, (1, 8, 8)), the MNIST-1D CNN (batch 64, (40,)) and ResNet-32
(batch 64, (3, 32, 32)), with the loss learning Delta and iota (``ParametricLoss``), model in
training mode, the same batch for every product:

* ``double backward`` (``hessian: exact``, today's): grad_w L with its graph kept once, then each
  product is one more backward pass through that graph;
* ``forward-over-reverse``: ``torch.func.jvp`` of ``torch.func.grad`` of the loss as a function of
  the weights (``torch.func.functional_call``), one call per product;
* ``finite differences`` (``hessian: finite_difference``): two training gradients at w +- eps v;
* ``primitive BatchNorm`` (tried, not adopted): the double backward of a graph whose training-mode
  BatchNorm is written in primitive operations (mean, variance, scale; the running statistics
  updated by the native kernel, as always), so autograd differentiates those instead of BatchNorm's own
  double backward; its graph is built once and timed on its own;
* ``Gauss-Newton`` (tried, not adopted): J^T H_loss J v, the logits' tangent J v by forward mode
  (``torch.func.jvp``), H_loss by a double backward through the loss alone, J^T by one backward
  pass through the forward graph (built once); not the exact product: it drops the network's own
  curvature.

Time per product is the median over ``--repeats`` products after warm-up; the graph of the double
backward is built once and counted separately (a hyper step builds it once for all its products).
Exactness: the relative difference of each to the double backward's product.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from ab_tune.core.loss import ParametricLoss
from ab_tune.core.models import build_model

SETUPS = {"digits": ("digits_cnn", (1, 8, 8), 32), "mnist1d": ("mnist1d_cnn", (40,), 64),
          "resnet32": ("resnet32", (3, 32, 32), 64)}


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def primitive_batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                         eps=1e-5):
    """Training-mode ``F.batch_norm`` in primitive operations (the batch's biased variance)."""
    if running_mean is not None:  # the native kernel updates the running statistics, as it always does
        with torch.no_grad():  # (in place without a version bump, so graphs that saved them stay valid)
            F.batch_norm(x, running_mean, running_var, training=True, momentum=momentum, eps=eps)
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean = x.mean(dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dims, keepdim=True)
    scale = torch.rsqrt(var + eps) * (1 if weight is None else weight.view(shape))
    out = centred * scale
    return out if bias is None else out + bias.view(shape)


class PrimitiveBatchNorm(torch.overrides.TorchFunctionMode):
    """Inside this mode every training-mode ``F.batch_norm`` runs as ``primitive_batch_norm``."""
    NAMES = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.batch_norm:
            bound = {**dict(zip(self.NAMES, args)), **(kwargs or {})}
            if bound.get("training", False):
                return primitive_batch_norm(*(bound.get(k) for k in self.NAMES[:5]), True,
                                            bound.get("momentum", 0.1), bound.get("eps", 1e-5))
        return func(*args, **(kwargs or {}))


def measure(setup: str, repeats: int) -> dict:
    name, shape, batch = SETUPS[setup]
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    model.train()
    loss_fn = ParametricLoss.from_preset("ce", torch.arange(10, 0, -1).float() * 10, learn=["delta", "iota"])
    x, y = torch.randn(batch, *shape), torch.arange(batch) % 10
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    v = [torch.randn_like(p) for p in params]
    # torch.func cannot update BatchNorm's running statistics inside a transform; a copy without
    # them computes the same training-mode function (batch statistics) of the same weights
    functional_model = torch.func.replace_all_batch_norm_modules_(copy.deepcopy(model))

    def plain_step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    def loss_of(weights):
        out = torch.func.functional_call(functional_model, dict(zip(names, weights)), (x,))
        return F.cross_entropy(loss_fn.adjusted_logits(out), y)

    grads = torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)

    def double_backward():
        return torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)

    def build_graph():
        return torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)

    def forward_over_reverse():
        return torch.func.jvp(torch.func.grad(loss_of), (tuple(p.detach() for p in params),), (tuple(v),))[1]

    size = float(torch.sqrt(sum((t * t).sum() for t in v)))
    eps = 0.01 / size  # hessian: finite_difference's default radius

    def finite_difference():
        def grad_at(scale):
            with torch.no_grad():
                for p, t in zip(params, v):
                    p.add_(t, alpha=scale)
            g = torch.autograd.grad(loss_fn(model(x), y), params)
            with torch.no_grad():
                for p, t in zip(params, v):
                    p.sub_(t, alpha=scale)
            return g
        plus, minus = grad_at(eps), grad_at(-eps)
        return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]

    def build_primitive_graph():
        with PrimitiveBatchNorm():
            return torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)

    primitive_grads = build_primitive_graph()

    def primitive_double_backward():
        return torch.autograd.grad(primitive_grads, params, grad_outputs=v, retain_graph=True)

    logits = model(x)
    logit_grad = torch.autograd.grad(loss_fn(logits, y), logits, create_graph=True)[0]

    def gauss_newton():
        tangents = dict(zip(names, v))
        primals = {n: p.detach() for n, p in zip(names, params)}
        jv = torch.func.jvp(lambda w: torch.func.functional_call(functional_model, w, (x,)), (primals,), (tangents,))[1]
        hjv = torch.autograd.grad(logit_grad, logits, grad_outputs=jv, retain_graph=True)[0]
        return torch.autograd.grad(logits, params, grad_outputs=hjv, retain_graph=True)

    step_s, _ = timed(plain_step, repeats)
    graph_s, _ = timed(build_graph, repeats)
    primitive_graph_s, _ = timed(build_primitive_graph, repeats)
    results = {"setup": setup, "model": name, "batch": batch, "plain_step_s": step_s, "graph_s": graph_s,
               "primitive_graph_s": primitive_graph_s}
    _, reference = timed(double_backward, 1)
    reference = [t.detach() for t in reference]
    flat_reference = torch.cat([t.flatten() for t in reference])
    # finite differences last: they move the weights in place, which the kept graphs saved
    for label, fn in (("double_backward", double_backward), ("forward_over_reverse", forward_over_reverse),
                      ("primitive_batch_norm", primitive_double_backward), ("gauss_newton", gauss_newton),
                      ("finite_difference", finite_difference)):
        seconds, out = timed(fn, repeats)
        flat = torch.cat([t.detach().flatten() for t in out])
        results[label] = (seconds, float(torch.linalg.norm(flat - flat_reference) / torch.linalg.norm(flat_reference)))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s); ms per product (median of {args.repeats}); in plain steps; relative difference "
          "to the double backward's product.\n")
    print("| setup | plain step (ms) | grad graph once (ms) | double backward | forward-over-reverse | finite differences "
          "| primitive BatchNorm (its graph once, ms) | Gauss-Newton |")
    print("|---|---|---|---|---|---|---|---|")
    for setup in [s for s in args.setups.split(",") if s]:
        r = measure(setup, args.repeats)
        cells = [f"{r[k][0] * 1e3:.1f} ms = {r[k][0] / r['plain_step_s']:.2f} steps (diff {r[k][1]:.0e})"
                 for k in ("double_backward", "forward_over_reverse", "finite_difference", "primitive_batch_norm",
                           "gauss_newton")]
        cells[3] += f" ({r['primitive_graph_s'] * 1e3:.1f})"
        print(f"| {setup} ({r['model']}, batch {r['batch']}) | {r['plain_step_s'] * 1e3:.1f} | {r['graph_s'] * 1e3:.1f} | "
              + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
