"""
The Tiny Recursive Model (TRM, arXiv 2510.04871) in one file, with its successor URM (arXiv
2512.14693) and its ancestor HRM (arXiv 2506.21734) as switches (`arch`; REFERENCE.md §8, §9).

Reading order:
  TRMConfig        the sizes and switches of the network and of ACT halting
  Block            one post-norm transformer block (attention or mlp_t variant; SwiGLU or ConvSwiGLU)
  TRM.embed             token + puzzle-embedding prefix + positions -> x
  TRM.latent_recursion  the paper's latent_recursion: n latent updates, then one answer update
  TRM.deep_recursion    the paper's deep_recursion: T-1 no-gradient latent recursions, then one
                        with gradient (URM's and HRM's recursions are their own methods beside it)
  TRM.recurse           one ACT step: the recursion, then the output and halting heads
  TRM.forward           the ACT wrapper and the loss head: reset halted rows, recurse, halt, loss
  TRM.solve             evaluation: run every row for halt_max_steps steps

Names: the paper's answer y is z_H here and its latent z is z_L, the names the reference code and
its checkpoints use. Parameter names match the reference's state dict (REFERENCE.md §6) one to one, so a
reference checkpoint loads after stripping its key prefix, with no renaming. The same holds for the
URM (`layers.*`, `init_hidden`) and HRM (`H_level.*`, `L_level.*`) checkpoints.

The three architectures share the embedding, the blocks, the ACT wrapper, the loss head and the
puzzle embedding. They differ in the recursion:
  trm  one net; z_L = net(z_L, z_H + x) L_cycles times, then z_H = net(z_H, z_L); H_cycles such
       cycles, the last one with gradient.
  hrm  the same loop with a second stack for the z_H update (H_level); gradient only through the
       very last z_L and z_H update ("1-step gradient"); halting learns Q-continue.
  urm  one state s and one stack (`layers`); an iteration is s = blocks(s + x); H_cycles * L_cycles
       iterations, the last L_cycles with gradient; ConvSwiGLU channel MLP; a one-position prefix.
"""

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

import ops
from ops import IGNORE_INDEX


@dataclass
class TRMConfig:
    # sizes read from the dataset (dataset.json)
    vocab_size: int = 11
    seq_len: int = 81
    num_puzzle_identifiers: int = 1
    # network
    arch: str = "trm"             # 'trm' | 'urm' (successor) | 'hrm' (ancestor): see the module docstring
    hidden_size: int = 512
    num_heads: int = 8
    expansion: float = 4.0
    L_layers: int = 2             # blocks in the one reasoning network (URM: num_layers; HRM: the L stack)
    H_layers: int = 0             # HRM only: blocks in the H stack (must be 0 otherwise)
    H_cycles: int = 3             # answer updates per ACT step (only the last one gets gradient)
    L_cycles: int = 6             # latent updates per answer update (URM: H_cycles * L_cycles iterations
                                  # per ACT step, the last L_cycles with gradient)
    puzzle_emb_ndim: int = 512    # width of the learned per-puzzle embedding, 0 = none
    puzzle_emb_len: int = 16      # prefix positions it occupies; 0 = ceil(puzzle_emb_ndim / hidden_size)
    pos_encodings: str = "rope"   # 'rope' | 'learned' | 'none'
    mlp_t: bool = False           # replace attention by an MLP across the sequence (Sudoku recipe)
    mlp_kind: str = "swiglu"      # channel MLP: 'swiglu' | 'conv_swiglu' (URM: a causal depthwise conv inside)
    conv_dtype: str = "bfloat16"  # conv_swiglu: dtype of the conv parameters and of the MLP from the conv
                                  # input on: 'bfloat16' as URM, or 'float32' (bf16 weights barely train)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # adaptive computation time (ACT)
    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1
    no_ACT_continue: bool = True  # True: halt when q_halt > 0; False: q_halt > q_continue, and learn q_continue
    # loss
    loss_type: str = "stablemax"  # 'stablemax' | 'softmax'
    forward_dtype: str = "float32"  # 'float32' (CPU) | 'bfloat16' (CUDA); parameters stay float32

    def __post_init__(self):
        """Reject settings that make none of the three models (train.py prints the ValueError)."""
        def need(ok, msg):
            if not ok:
                raise ValueError(msg)
        a = f"arch={self.arch!r}"
        need(self.arch in ("trm", "urm", "hrm"), f"arch must be 'trm', 'urm' or 'hrm', got {self.arch!r}")
        need(self.hidden_size % self.num_heads == 0, "hidden_size must be a multiple of num_heads")
        need(self.pos_encodings in ("rope", "learned", "none"), f"unknown pos_encodings {self.pos_encodings!r}")
        need(self.mlp_kind in ("swiglu", "conv_swiglu"),
             f"mlp_kind must be 'swiglu' or 'conv_swiglu', got {self.mlp_kind!r}")
        need(self.conv_dtype in ("bfloat16", "float32"),
             f"conv_dtype must be 'bfloat16' or 'float32', got {self.conv_dtype!r}")
        need((self.H_layers > 0) == (self.arch == "hrm"),
             f"{a}: H_layers (HRM's H stack) must be positive for hrm and 0 otherwise, got {self.H_layers}")
        if self.arch in ("urm", "hrm"):
            # the references have no puzzle_emb_len: their prefix is ceil(puzzle_emb_ndim / hidden_size)
            need(self.puzzle_emb_ndim == 0 or self.prefix_len == -(-self.puzzle_emb_ndim // self.hidden_size),
                 f"{a}: the puzzle prefix is ceil(puzzle_emb_ndim / hidden_size) positions: "
                 "set puzzle_emb_len=0")
            need(not self.mlp_t, f"{a}: attention only, no mlp_t")
        if self.arch == "urm":
            # URM builds RoPE whatever pos_encodings says: ask for it rather than ignore the setting
            need(self.pos_encodings == "rope", f"{a}: URM always uses RoPE: set pos_encodings='rope'")
            need(self.no_ACT_continue, f"{a}: URM halts on q_halt > 0 and learns no Q-continue: "
                 "set no_ACT_continue=True")
        if self.arch == "hrm":
            need(self.pos_encodings in ("rope", "learned"), f"{a}: HRM needs pos_encodings 'rope' or 'learned'")
            need(not self.no_ACT_continue, f"{a}: HRM halts on q_halt > q_continue and learns Q-continue: "
                 "set no_ACT_continue=False")

    @classmethod
    def from_settings(cls, settings: dict, **sizes) -> "TRMConfig":
        """The config named by a dict of settings (a train config's globals; keys that are not
        fields are ignored), with sizes (vocab_size, seq_len, ...) given separately."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in settings.items() if k in names}, **sizes})

    @property
    def prefix_len(self):
        """P: the number of puzzle-embedding positions in front of the tokens."""
        if self.puzzle_emb_ndim == 0:
            return 0
        return self.puzzle_emb_len or -(-self.puzzle_emb_ndim // self.hidden_size)


def trunc_normal_(t, std):
    """Normal init truncated at +-2 standard deviations, rescaled so the result has std `std`
    exactly (torch's trunc_normal_ keeps the untruncated std, about 12% too small)."""
    with torch.no_grad():
        if std == 0:
            return t.zero_()
        # std of a unit normal truncated to [-2, 2]: 1 - 2 a phi(a) / (Phi(a) - Phi(-a)), a = 2
        a = 2.0
        phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
        mass = math.erf(a / math.sqrt(2))
        unit_std = math.sqrt(1 - 2 * a * phi / mass)
        scale = std / unit_std
        return nn.init.trunc_normal_(t, 0.0, scale, -a * scale, a * scale)


def rms_norm(x, eps):
    """Scale-free RMS norm, computed in float32 whatever the forward dtype."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


class Linear(nn.Module):
    """Bias-free linear layer (unless asked) with float32 weights cast to the input dtype."""

    def __init__(self, n_in, n_out, bias=False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(n_out, n_in), 1.0 / math.sqrt(n_in)))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x):
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class Embedding(nn.Module):
    def __init__(self, n, dim, std):
        super().__init__()
        self.embedding_weight = nn.Parameter(trunc_normal_(torch.empty(n, dim), std))

    def forward(self, idx, dtype):
        return F.embedding(idx, self.embedding_weight.to(dtype))


def swiglu_inner(width, expansion):
    """The inner width of SwiGLU and ConvSwiGLU: 2/3 * expansion * width, rounded up to 256."""
    return -(-round(expansion * width * 2 / 3) // 256) * 256


class SwiGLU(nn.Module):
    """down(silu(gate) * up), of inner width swiglu_inner(width, expansion)."""

    def __init__(self, width, expansion):
        super().__init__()
        inner = swiglu_inner(width, expansion)
        self.gate_up_proj = Linear(width, 2 * inner)  # first half gate, second half up
        self.down_proj = Linear(inner, width)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class ConvSwiGLU(nn.Module):
    """URM's channel MLP: down(silu(conv(silu(gate) * up))), where conv is a depthwise convolution of
    kernel 2 over the sequence axis, causal: c[t] = w0 * u[t-1] + w1 * u[t] + b per channel, u[-1] = 0
    (on a flattened grid, a cell mixes with its left neighbour; the first token with the prefix).
    URM keeps the conv parameters in bfloat16 and casts the conv input to it, so the conv, the SiLU
    after it and down_proj run in bfloat16 (`dtype`); the output returns in the input's dtype."""

    def __init__(self, width, expansion, dtype):
        super().__init__()
        inner = swiglu_inner(width, expansion)
        self.gate_up_proj = Linear(width, 2 * inner)
        # PyTorch's default Conv1d init (uniform +-1/sqrt(2) for weight [inner, 1, 2] and bias), then cast
        self.dwconv = nn.Conv1d(inner, inner, kernel_size=2, padding=1, groups=inner).to(dtype)
        self.down_proj = Linear(inner, width)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        u = (F.silu(gate) * up).to(self.dwconv.weight.dtype).transpose(1, 2)  # [B, inner, S]
        c = self.dwconv(u)[..., :x.shape[1]]  # padding 1 on both sides: the first S outputs are causal
        return self.down_proj(F.silu(c).transpose(1, 2)).to(x.dtype)


def rope_tables(head_dim, n_pos, theta):
    """cos, sin [n_pos, head_dim] for 'rotate half' RoPE (both halves share the frequencies)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(n_pos, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # x [B, S, heads, head_dim]; cos, sin [S, head_dim]; rotate in float32, return in x's dtype
    x32 = x.float()
    x1, x2 = x32.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x32 * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, hidden, n_heads):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, hidden // n_heads
        self.qkv_proj = Linear(hidden, 3 * hidden)  # output columns: q, then k, then v
        self.o_proj = Linear(hidden, hidden)

    def forward(self, x, rope):
        B, S, h = x.shape
        q, k, v = self.qkv_proj(x).view(B, S, 3, self.n_heads, self.head_dim).unbind(2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # non-causal: every position sees the whole puzzle
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o_proj(y.transpose(1, 2).reshape(B, S, h))


class Block(nn.Module):
    """Post-norm block: x = norm(x + mix(x)); x = norm(x + mlp(x)). The token mixer is attention,
    or (mlp_t) a SwiGLU applied across the sequence axis, its norm over the sequence too."""

    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.eps = cfg.rms_norm_eps
        if cfg.mlp_t:
            self.mlp_t = SwiGLU(cfg.prefix_len + cfg.seq_len, cfg.expansion)
        else:
            self.self_attn = Attention(cfg.hidden_size, cfg.num_heads)
        if cfg.mlp_kind == "conv_swiglu":
            self.mlp = ConvSwiGLU(cfg.hidden_size, cfg.expansion, getattr(torch, cfg.conv_dtype))
        else:
            self.mlp = SwiGLU(cfg.hidden_size, cfg.expansion)

    def forward(self, x, rope):
        if hasattr(self, "mlp_t"):
            xt = x.transpose(1, 2)  # [B, h, S]
            x = rms_norm(xt + self.mlp_t(xt), self.eps).transpose(1, 2)
        else:
            x = rms_norm(x + self.self_attn(x, rope), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class Reasoner(nn.Module):
    """net(z, injection) = blocks(z + injection): TRM's one network behind both updates (HRM: one
    for each update, H_level and L_level)."""

    def __init__(self, cfg: TRMConfig, n_layers):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(n_layers))

    def forward(self, z, injection, rope):
        z = z + injection
        for layer in self.layers:
            z = layer(z, rope)
        return z


class PuzzleEmbedding(nn.Module):
    """The per-puzzle embedding table [num_puzzle_identifiers, ndim]: a buffer, not a parameter,
    trained by sign-SGD (optim.SignSGD) on the rows a batch touched. In training the batch's rows
    are copied into a fresh leaf tensor `local_weights` that receives the gradient; the optimiser
    reads it together with `local_ids`. Only B rows are touched per step, so a dense Adam over
    the whole table (up to ~1M rows for ARC) would waste memory and time."""

    def __init__(self, num, ndim):
        super().__init__()
        self.weights = nn.Buffer(torch.zeros(num, ndim))
        self.local_weights = None  # [B, ndim] leaf, set by each training forward
        self.local_ids = None      # [B] int32

    def forward(self, ids):
        rows = ops.gather_rows(self.weights, ids)
        if self.training and torch.is_grad_enabled():
            rows.requires_grad_()
            self.local_weights, self.local_ids = rows, ids
        return rows


@dataclass
class Carry:
    """Everything ACT keeps between calls: per row, the recursion state, the steps taken, whether
    it halted, and the batch row it is working on."""
    z_H: torch.Tensor               # [B, P+L, h] answer state (paper: y); URM: its one state
    z_L: torch.Tensor               # [B, P+L, h] latent state (paper: z); URM: the same tensor as z_H
    steps: torch.Tensor             # [B] int32
    halted: torch.Tensor            # [B] bool
    current_data: dict = field(default_factory=dict)  # inputs, labels, puzzle_identifiers

    def to_state(self) -> dict:
        """The carry as a dict of CPU tensors, for a checkpoint."""
        return {k: ({n: t.cpu() for n, t in v.items()} if isinstance(v, dict) else v.cpu())
                for k, v in vars(self).items()}

    @classmethod
    def from_state(cls, state: dict, device) -> "Carry":
        return cls(**{k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v.to(device))
                      for k, v in state.items()})

    @staticmethod
    def cat_states(states: list) -> dict | None:
        """The saved carries of all ranks, in rank order, as one for the global batch (None if any
        rank had none yet)."""
        if any(st is None for st in states):
            return None
        join = lambda xs: (torch.cat(xs, 0) if isinstance(xs[0], torch.Tensor)
                           else {n: torch.cat([x[n] for x in xs], 0) for n in xs[0]})
        return {k: join([st[k] for st in states]) for k in states[0]}

    def split(self, k: int) -> list["Carry"]:
        """k carries of consecutive rows (the micro-batches of gradient accumulation)."""
        n = len(self.steps) // k
        return [self.select(slice(i * n, (i + 1) * n)) for i in range(k)]

    @staticmethod
    def cat(carries: list["Carry"]) -> "Carry":
        return Carry(**{k: ({n: torch.cat([vars(c)[k][n] for c in carries]) for n in v} if isinstance(v, dict)
                            else torch.cat([vars(c)[k] for c in carries])) for k, v in vars(carries[0]).items()})

    def select(self, keep) -> "Carry":
        """The carry of the rows keep picks ([B] bool, or a slice)."""
        return Carry(**{k: ({n: t[keep] for n, t in v.items()} if isinstance(v, dict) else v[keep])
                        for k, v in vars(self).items()})

    @staticmethod
    def state_rows(state: dict, lo: int, hi: int) -> dict:
        """Rows [lo, hi) of a saved carry: one rank's part of the global batch."""
        return {k: ({n: t[lo:hi] for n, t in v.items()} if isinstance(v, dict) else v[lo:hi])
                for k, v in state.items()}


def supervision_weights(decay: float, n: int) -> torch.Tensor:
    """[n] float32: the loss weight of ACT steps 1..n under supervision weighting, decay ** (t - 1)
    for step t, scaled so that the n weights average 1 (decay 1.0: every weight 1, the references'
    loss). CGAR (arXiv 2511.08653) normalises them to sum to 1 instead; under Adam-type optimisers
    a constant factor on the loss changes almost nothing, and this scale leaves decay 1.0 exact."""
    w = decay ** torch.arange(n, dtype=torch.float64)
    return (w * (n / w.sum())).float()


class TRM(nn.Module):
    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.cfg = cfg  # validated by TRMConfig.__post_init__
        h, P = cfg.hidden_size, cfg.prefix_len
        self.P = P
        self.dtype = getattr(torch, cfg.forward_dtype)

        self.embed_tokens = Embedding(cfg.vocab_size, h, std=1.0 / math.sqrt(h))
        self.lm_head = Linear(h, cfg.vocab_size)
        self.q_head = Linear(h, 2, bias=True)  # (q_halt, q_continue) from the first position
        with torch.no_grad():
            # start with q_halt ~ sigmoid(-5): no early halting until the answers become right
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        if cfg.puzzle_emb_ndim > 0:
            self.puzzle_emb = PuzzleEmbedding(cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim)
        if cfg.pos_encodings == "learned":
            self.embed_pos = Embedding(P + cfg.seq_len, h, std=1.0 / math.sqrt(h))
        if cfg.pos_encodings == "rope":
            cos, sin = rope_tables(h // cfg.num_heads, P + cfg.seq_len, cfg.rope_theta)
            self.rope_cos = nn.Buffer(cos, persistent=False)
            self.rope_sin = nn.Buffer(sin, persistent=False)
        # initial states: random, never trained, saved with the weights
        if cfg.arch == "urm":
            # one stack applied to one state, both named as in URM's checkpoints
            self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.L_layers))
            self.init_hidden = nn.Buffer(trunc_normal_(torch.empty(h), 1.0))
        else:
            if cfg.arch == "hrm":
                self.H_level = Reasoner(cfg, cfg.H_layers)
            self.L_level = Reasoner(cfg, cfg.L_layers)
            self.H_init = nn.Buffer(trunc_normal_(torch.empty(h), 1.0))
            self.L_init = nn.Buffer(trunc_normal_(torch.empty(h), 1.0))
        # the recursion of one ACT step, chosen once
        self.recursion = {"trm": self.deep_recursion, "hrm": self.hrm_recursion, "urm": self.urm_recursion}[cfg.arch]
        # training schedules (train.py sets them; None = off, the references' training):
        # train_depth, an (H_cycles, L_cycles) that training runs instead of cfg's (a depth
        # curriculum); evaluation (model.eval()) always runs cfg's full depth
        self.train_depth = None
        # step_weights [halt_max_steps], the weight of the loss of each ACT step while training
        # (supervision_weights)
        self.step_weights = None

    # ----------------------------------------------------------------------------------------
    # the network

    def embed(self, inputs, puzzle_identifiers):
        """x [B, P+L, h]: puzzle-embedding prefix then token embeddings, positions, * sqrt(h)."""
        h, P = self.cfg.hidden_size, self.P
        x = self.embed_tokens(inputs.long(), self.dtype)
        if self.cfg.puzzle_emb_ndim > 0:
            pe = self.puzzle_emb(puzzle_identifiers.long()).to(self.dtype)  # [B, ndim]
            pe = F.pad(pe, (0, P * h - pe.shape[-1]))                     # fill prefix row 0 first
            x = torch.cat((pe.view(-1, P, h), x), dim=1)
        if self.cfg.pos_encodings == "learned":
            # this literal, not 1/sqrt(2) computed, reproduces the reference bit for bit
            x = 0.707106781 * (x + self.embed_pos.embedding_weight.to(self.dtype))
        return math.sqrt(h) * x

    # ----------------------------------------------------------------------------------------
    # the recursion, as the paper writes it: y is z_H (the answer), z is z_L (the latent)

    def cycles(self):
        """(H_cycles, L_cycles) of this call: the depth curriculum's while training, else cfg's."""
        if self.training and self.train_depth is not None:
            return self.train_depth
        return self.cfg.H_cycles, self.cfg.L_cycles

    def latent_recursion(self, x, y, z, rope):
        """n = L_cycles updates of the latent from the input, the answer and itself, then one
        update of the answer from the latent alone (one net for both)."""
        for _ in range(self.cycles()[1]):
            z = self.L_level(z, y + x, rope)
        y = self.L_level(y, z, rope)
        return y, z

    def deep_recursion(self, x, y, z, rope):
        """T = H_cycles latent recursions: T - 1 without gradient, which only move the state
        forward, then one with gradient, so memory does not grow with depth."""
        with torch.no_grad():
            for _ in range(self.cycles()[0] - 1):
                y, z = self.latent_recursion(x, y, z, rope)
        return self.latent_recursion(x, y, z, rope)

    def hrm_recursion(self, x, y, z, rope):
        """HRM: TRM's cycles with a second stack for the answer update (H_level), and gradient
        only through the very last latent and answer updates (its "1-step gradient")."""
        H, L = self.cycles()
        with torch.no_grad():
            for cycle in range(H):
                last = cycle == H - 1
                for _ in range(L - last):  # the last cycle's final update comes below
                    z = self.L_level(z, y + x, rope)
                if not last:
                    y = self.H_level(y, z, rope)
        z = self.L_level(z, y + x, rope)
        return self.H_level(y, z, rope), z

    def urm_recursion(self, x, s, _, rope):
        """URM: one state s and one stack (layers). An iteration re-injects the input, then runs
        every block; of H_cycles * L_cycles iterations only the last L_cycles get gradient."""
        def iteration(s):
            s = s + x
            for layer in self.layers:
                s = layer(s, rope)
            return s

        H, L = self.cycles()
        with torch.no_grad():
            for _ in range((H - 1) * L):
                s = iteration(s)
        for _ in range(L):
            s = iteration(s)
        return s, s  # URM's carry keeps its one state as both z_H and z_L

    def recurse(self, z_H, z_L, x):
        """One ACT step: the architecture's recursion, then the heads. Returns the detached new
        state, the token logits [B, L, V] and (q_halt, q_continue) [B] in float32."""
        rope = (self.rope_cos, self.rope_sin) if self.cfg.pos_encodings == "rope" else None
        y, z = self.recursion(x, z_H, z_L, rope)
        logits = self.lm_head(y)[:, self.P:]
        q = self.q_head(y[:, 0]).float()
        z_H = y.detach()
        return z_H, (z_H if z is y else z.detach()), logits, q[:, 0], q[:, 1]

    # ----------------------------------------------------------------------------------------
    # ACT wrapper and loss head

    def initial_carry(self, batch):
        """A carry whose rows are all halted, so the first call loads every row of the batch."""
        B, L = batch["inputs"].shape
        dev = batch["inputs"].device
        z = torch.zeros(B, self.P + L, self.cfg.hidden_size, dtype=self.dtype, device=dev)
        return Carry(z_H=z, z_L=z.clone(),
                     steps=torch.zeros(B, dtype=torch.int32, device=dev),
                     halted=torch.ones(B, dtype=torch.bool, device=dev),
                     current_data={k: torch.zeros_like(v) for k, v in batch.items()})

    def forward(self, carry: Carry, batch):
        """One ACT call on a rolling population of puzzles.
        Returns (new carry, loss, metrics, outputs); the loss is summed over rows (the training
        loop divides it by the global batch size)."""
        cfg = self.cfg
        # 1. halted rows restart from the initial state on the new batch's row; others continue
        reset = carry.halted
        H0, L0 = (self.init_hidden, self.init_hidden) if cfg.arch == "urm" else (self.H_init, self.L_init)
        z_H = torch.where(reset[:, None, None], H0.to(self.dtype), carry.z_H)
        z_L = torch.where(reset[:, None, None], L0.to(self.dtype), carry.z_L)
        steps = torch.where(reset, 0, carry.steps)
        data = {k: torch.where(reset.view(-1, *[1] * (v.ndim - 1)), batch[k], carry.current_data[k])
                for k, v in batch.items()}

        # 2. one step of recursion
        x = self.embed(data["inputs"], data["puzzle_identifiers"])
        z_H, z_L, logits, q_halt, q_continue = self.recurse(z_H, z_L, x)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        # 3. halting: always at halt_max_steps; in training also when Q says so
        with torch.no_grad():
            steps = steps + 1
            last = steps >= cfg.halt_max_steps
            halted = last
            if self.training and cfg.halt_max_steps > 1:
                halted = halted | (q_halt > (0 if cfg.no_ACT_continue else q_continue))
                # exploration: some rows must run at least a random number of steps
                explore = torch.rand_like(q_halt) < cfg.halt_exploration_prob
                min_steps = explore * torch.randint_like(steps, 2, cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
                if not cfg.no_ACT_continue:
                    # Q-learning target for q_continue: the value of the best action one step
                    # later, from one extra step without gradient (no replay buffer: the batch
                    # is a large population of parallel episodes)
                    _, _, _, nq_halt, nq_cont = self.recurse(z_H, z_L, x.detach())
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(last, nq_halt, torch.maximum(nq_halt, nq_cont)))
        new_carry = Carry(z_H, z_L, steps, halted, data)
        loss, metrics, rows = self.loss_head(new_carry, outputs)
        return new_carry, loss, metrics, {**outputs, **rows}

    def loss_head(self, carry, outputs):
        """(loss, metrics, rows): the loss summed over rows; the metrics of the rows that halted
        in this call, as sums (summarize), beside both losses summed over every row; and per row
        (`rows`, no gradient): the answer `preds` [B, L], `exact` [B] (every labelled token right),
        `token_accuracy`, `labelled` (the row has labels: not padding), `q_halt_correct`, `steps`,
        and its `lm_loss` and `q_halt_loss`."""
        labels = carry.current_data["labels"]
        logits = outputs["logits"]
        with torch.no_grad():
            preds = logits.argmax(-1)
            mask = labels != IGNORE_INDEX
            count = mask.sum(-1)                          # [B] labelled tokens per row
            divisor = count.clamp_min(1).unsqueeze(-1)
            correct = mask & (preds == labels)
            seq_correct = correct.sum(-1) == count        # a row with nothing to label counts as solved
        # every row contributes, halted or not: each call is one supervision step
        row_lm_loss = (ops.cross_entropy(self.cfg.loss_type, logits, labels) / divisor).sum(-1)  # [B]
        row_q_halt_loss = F.binary_cross_entropy_with_logits(
            outputs["q_halt_logits"], seq_correct.to(outputs["q_halt_logits"].dtype), reduction="none")
        lm_loss, q_halt_loss = row_lm_loss.sum(), row_q_halt_loss.sum()
        # supervision weighting: each row's loss times the weight of the ACT step it is at
        w = self.step_weights[carry.steps.long() - 1] if self.training and self.step_weights is not None else None
        if w is None:
            loss = lm_loss + 0.5 * q_halt_loss
        else:
            loss = (w * row_lm_loss).sum() + 0.5 * (w * row_q_halt_loss).sum()
        rows = {"preds": preds, "exact": seq_correct, "token_accuracy": (correct.float() / divisor).sum(-1),
                "labelled": count > 0, "q_halt_correct": (outputs["q_halt_logits"] >= 0) == seq_correct,
                "steps": carry.steps, "lm_loss": row_lm_loss.detach(), "q_halt_loss": row_q_halt_loss.detach()}
        metrics = {**self.summarize(rows, carry.halted), "lm_loss": lm_loss.detach(), "q_halt_loss": q_halt_loss.detach()}
        if "target_q_continue" in outputs:
            row_q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"], reduction="none")
            q_continue_loss = row_q_continue_loss.sum()
            loss = loss + 0.5 * (q_continue_loss if w is None else (w * row_q_continue_loss).sum())
            metrics["q_continue_loss"] = q_continue_loss.detach()
        return loss, metrics, rows

    @staticmethod
    def summarize(rows, done):
        """The metrics, as sums, of the labelled rows among `done`: their count, token accuracy,
        exact answers, right halting guesses (q_halt >= 0 exactly when solved) and ACT steps."""
        valid = done & rows["labelled"]
        return {"count": valid.sum(),
                "accuracy": torch.where(valid, rows["token_accuracy"], 0).sum(),
                "exact_accuracy": (valid & rows["exact"]).sum(),
                "q_halt_accuracy": (valid & rows["q_halt_correct"]).sum(),
                "steps": torch.where(valid, rows["steps"], 0).sum()}

    def halts_on_q(self, outputs):
        """[B] bool: where the learned halting rule says stop (q_halt > 0, or > q_continue when
        Q-continue is learned): training's rule, which evaluation normally does not apply."""
        q = outputs["q_halt_logits"]
        return q > (0 if self.cfg.no_ACT_continue else outputs["q_continue_logits"])

    @torch.no_grad()
    def solve(self, batch, on_step=None, halt_on_q=False):
        """Evaluation from a fresh carry. By default every row runs halt_max_steps steps (the
        references' evaluation); returns the last call's (carry, metrics, outputs), and
        on_step(step, carry, metrics, outputs) sees every call. With halt_on_q each row stops at
        the first step where its halting rule fires (halts_on_q; at the latest at halt_max_steps)
        and leaves the batch, so later steps compute only the rows still running; returns
        (None, the metrics of every row's final step, its per-row results in the batch's order)."""
        carry = self.initial_carry(batch)
        step = 0
        if not halt_on_q:
            while True:
                carry, _, metrics, outputs = self(carry, batch)
                step += 1
                if on_step is not None:
                    on_step(step, carry, metrics, outputs)
                if bool(carry.halted.all()):
                    return carry, metrics, outputs
        final, rows = {}, torch.arange(len(batch["inputs"]), device=batch["inputs"].device)  # rows still running
        while len(rows):
            carry, _, metrics, outputs = self(carry, batch)
            step += 1
            if on_step is not None:
                on_step(step, carry, metrics, outputs)
            stop = carry.halted | self.halts_on_q(outputs)
            for k in ("preds", "exact", "token_accuracy", "labelled", "q_halt_correct", "steps", "lm_loss",
                      "q_halt_loss", "q_halt_logits"):
                v = outputs[k]
                final.setdefault(k, v.new_zeros((len(batch["inputs"]),) + v.shape[1:]))[rows[stop]] = v[stop]
            keep = ~stop
            rows, carry = rows[keep], carry.select(keep)
            batch = {k: v[keep] for k, v in batch.items()}
        everyone = torch.ones_like(final["labelled"])
        metrics = {**self.summarize(final, everyone), "lm_loss": final["lm_loss"].sum(),
                   "q_halt_loss": final["q_halt_loss"].sum()}
        return None, metrics, final

    def num_params(self):
        return sum(p.numel() for p in self.parameters())
