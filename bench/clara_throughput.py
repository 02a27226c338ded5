"""CLaRa stages and LoRA at real shapes: tokens/s, MFU, peak memory and where the memory goes,
against mlx-lm's own LoRA trainer in the same run.

A random model is built from a shape (a preset or flags) and saved once, so nothing is
downloaded; every measurement then runs in a process of its own (peak memory is per process)
through the real paths: `clara train`'s tasks and engine, and mlx-lm's `train` with its own
LoRA layers and loss. Before the timed steps each clara process measures, uncompiled, the peak of
the forward alone and of forward + backward (`mx.get_peak_memory` after `mx.reset_peak_memory`),
beside the weights; the timed engine steps give the whole step's peak.

Tokens are every real (non-pad) token of a step: for CLaRa the encoder's (<ENC> BOS document
EOS and the memory tokens of every document) plus the decoder's (prompt, memory slots, answer);
for LoRA the rows' tokens. MFU is the step's model FLOPs over the chip's peak bf16 rate (989
TFLOP/s, the H200's dense figure), counted the same way for both kinds (`step_flops`): a frozen
base with trained adapters does the forward (2 FLOPs per weight and token through every block
matmul and the LoRA pairs, causal attention's scores and mixing, and the output head only at the
positions whose logits the loss needs: none for CLaRa's encoder, whose states are its output,
the supervised positions of the decoder and of a LoRA row) and a backward of as many FLOPs
again (input gradients of every matmul; weight gradients for the adapters alone), so about
4 * N per token, not 6 * N: the old figure, 6 * N * tokens/s with N every block weight plus
the head (also for encoder tokens), is the column MFU6N. Padding's FLOPs are not counted.
`traces` is how often the step was traced (mx.compile traces and compiles again for every new
batch shape: seconds each on CUDA), `host ms` the median time the host spent queuing one step
(making the batch, calling the compiled step, mx.async_eval).

    python bench/clara_throughput.py --preset cpu                 # small shapes, a minute or two
    python bench/clara_throughput.py --preset 1b --steps 20       # the GPU table
    python bench/clara_throughput.py --preset 8b-q4 --only stage1 --batch-size 1
    python bench/clara_throughput.py --preset cpu --root OLD      # also an older checkout

Writes bench/results/clara_throughput-DATE.json (or --json) and prints a table, then for CLaRa
what the backward pass keeps of each part of the forward (uncompiled) and the estimate's parts.

Measured on the lent H200 (mlx 0.32.4 CUDA, bf16, 2026-11-30; `bash scripts/gpu-check.sh info
clara big` with STEPS=5; tok/s the median of 3 timed steps):

    1.1B (N=0.770B), batch 8, doc 256, CR 16  tok/s   MFU  peak GB  fwd+bwd  est GB (now)
    stage1                                     29016  13.6%   21.85    16.76   20.91
    stage1+chunk                               30404  14.2%   22.03    16.64   19.77
    stage1+chunk+ckpt                          22719  10.6%   17.84    14.12   14.33
    kept for backward (stage1): encoder 3.05 GB, decoder blocks 4.73 GB (83 KB per token and
    block: 9h + 4i + 3kv elements, no dropout masks), head + CE 0.47 GB; uncompiled backward
    transients 7.0 GB; mx.compile's step +5 GB over the uncompiled one.
    8B 4-bit (N=7.5B), batch 1
    stage1+chunk                                1557   7.1%   15.21    11.05   16.36
    stage1+chunk+ckpt                           1407   6.4%   11.16    11.05   13.31

Where the excess went (nvidia-h200-x2, one GPU, 2026-11-30, later the same day). Tok/s is now
tokens over seconds of the steps after the warm-up (the engine's cumulative counts), not a
median of per-step rates: not comparable with the rows above. `+limX` runs the engine with
MLX's memory limit at X GB (CLARA_MLX_MEMORY_LIMIT_GB), `+seq` without the step look-ahead.
`CUDA_VISIBLE_DEVICES=0 STEPS=12 CLARA_ONLY=stage1,stage1+lim10,stage1+chunk+ckpt+lim6,
lora+lim10,mlx-lm bash scripts/gpu-check.sh clara`:

    work               code        tok/s    MFU  peak GB  weights     fwd  fwd+bwd  est GB 1st step s
    stage1             new         22638  10.6%    21.85     1.54    2.96    16.62   20.91        4.9
    stage1+lim10       new         15767   7.4%    11.86     1.54    2.96    14.25   20.91        2.4
    stage1+chunk+ckpt+lim6 new         11877   5.5%     8.44     1.54    2.98    16.36   14.33        2.6
    lora+lim10         new         90796  42.4%     9.93     1.54    2.27     8.28    9.57        0.4
    mlx-lm             mlx-lm      55049  25.7%    12.39        -       -        -   10.06       12.7

The run before it (STEPS=6, first process on the machine, so its first steps compiled kernels)
gave, beside the same peaks: stage1+seq 21.85 GB (the look-ahead is not the excess),
stage1+chunk+ckpt 17.84 GB at 10.5k tok/s, lora 10.65 GB at 90.2k, lora+seq 13.60 GB.
`CUDA_VISIBLE_DEVICES=0 BIG_ONLY=stage1+chunk+ckpt+lim8,stage1+chunk+ckpt bash
scripts/gpu-check.sh big` (4 steps, 1 warm-up; the first row paid the kernel compilation):

    work               code        tok/s    MFU  peak GB  weights     fwd  fwd+bwd  est GB 1st step s
    stage1+chunk+ckpt+lim8 new           993   4.5%     8.82     4.52    5.45    11.05   13.31       24.7
    stage1+chunk+ckpt  new          2093   9.5%    11.16     4.52    5.45    11.05   13.31        7.0

Step speed (nvidia-h200-x2, one GPU, 2026-11-30, session 7; 12 steps, 2 warm-up, tokens over
the seconds of the steps after them; `code old` is the checkout before this session's
changes). First lease, `CUDA_VISIBLE_DEVICES=0 STEPS=12 CLARA_ARGS="--root OLD" CLARA_ONLY=
stage1,stage1+pad64,stage1+drop0,stage1+pad64+drop0,lora+lim10,stage1+chunk+ckpt+lim8,
stage1+chunk+lim8,stage1+ckpt+lim8 bash scripts/gpu-check.sh clara` (the first row paid the
kernel compilation in its first step; its rate is of the steps after the warm-up):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1                 new       18707   5.7%   8.7%    21.85     1.54   2.96    15.92   20.91  207.1      2   209.3
    stage1                 old       17440   5.3%   8.1%    21.85     1.54   2.96    14.45   20.91    1.9      -       -
    stage1+pad64           new       25588   7.8%  12.0%    22.11     1.54   2.97    16.28   21.62    2.5      1   231.9
    stage1+drop0           new       29658   9.0%  13.9%    20.02     1.54   2.44    12.30   20.91   10.4      2   133.7
    stage1+pad64+drop0     new       35839  10.9%  16.7%    16.09     1.54   2.45    14.28   21.62    1.5      1   163.3
    lora+lim10             new       90998  29.3%  42.5%     9.89     1.54   2.25     8.28    9.57   26.4      1    47.6
    stage1+chunk+ckpt+lim8 new       11898   3.6%   5.6%     8.43     1.54   2.98    12.99    9.53   96.1      2   426.6
    stage1+chunk+lim8      new       16407   5.0%   7.7%    12.13     1.54   2.98    15.71   10.19    1.7      2   338.7
    stage1+ckpt+lim8       new       11954   3.6%   5.6%     8.43     1.54   2.96    14.57    9.67    2.6      2   456.7

(`new` there had only the host-sync fix: CLaRa's batch_tokens read its masks with an mx sum and
.item(), which queued behind the step just launched and waited for it, undoing the look-ahead.)
Second lease, with CLaRa's rows padded to padded_length's widths (one shape here: encoder 320,
decoder 448), `CUDA_VISIBLE_DEVICES=0 STEPS=12 CLARA_ONLY=stage1,stage1+chunk+ckpt+lim8,
stage1+chunk+lim8,stage1+ckpt+lim10 bash scripts/gpu-check.sh clara` (est GB before the held
estimate was refitted; now 21.62, 8.48, 13.94, 10.60):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1                 new       29391   8.9%  13.7%    22.19     1.54   2.97    16.33   21.62  186.9      1   213.7
    stage1+chunk+ckpt+lim8 new       15839   4.8%   7.4%     8.58     1.54   2.98    15.54    9.59   91.9      1   411.7
    stage1+chunk+lim8      new       19094   5.8%   8.9%    12.79     1.54   2.98    17.11   10.27    1.9      1   325.0
    stage1+ckpt+lim10      new       15651   4.7%   7.3%    10.43     1.54   2.97    14.71   11.73    2.8      1   432.0

What these say. A CLaRa step is 5541 real tokens (3.0 GFLOP each) and queuing it takes the
host 210 ms (LoRA's 4104-token step: 48 ms), more than the GPU needs for it: stage 1 is
host-bound, which is why its MFU (8.9 %) is far under LoRA's (29.3 %; 42.5 % counted as 6N),
and why the per-component CPU timings say little (on the CPU the same model trains CLaRa's
tokens as fast as LoRA's). The host's time goes to kernel launches (two passes of 16 blocks,
7 adapted projections each, each adapter a cast, two matmuls, a scale and an add, and with
dropout a key, a mask and a select, forward and backward: dropout alone costs 75 ms of host and
35 % of the speed, stage1+drop0) and to making the batch (tokenizing 8 chat renders and 8
documents a step). Retraces cost most in short runs: two decoder widths, 2 traces, 18.7k;
one width, 25.6k to 29.4k. Graph ops of one uncompiled stage-1 step on the CPU (hidden 512,
4 blocks, batch 4; mx.export_to_dot): 9229 with dropout, 5141 without, LoRA's step 2443; a
dropout key drawn from MLX's global random state per adapter call was 25 ops of it, now one
key per pass (clara.method.adapters): 7719, not yet measured on the GPU. At the reference's memory: checkpointing, chunked CE and an 8 GB
MLX limit give 8.58 GB at 15.8k tokens/s, 1.21x the reference's eager speed (13.1k at 10.2 GB).
Not reached: MFU >= 35 % (8.9 %).

Session 8 (nvidia-h200-x2, one GPU, fresh machines; 10 steps, 2 warm-up; CLARA_BENCH_PEAKS=0
skips the uncompiled per-component peaks, hence the empty columns; +bN is batch N on the same
model and rows). First lease, `CUDA_VISIBLE_DEVICES=0 CLARA_BENCH_PEAKS=0 STEPS=10 CLARA_ONLY=
stage1,stage1+b16,stage1+b32,stage1+drop0,lora+b16,lora+b32 bash scripts/gpu-check.sh clara`
(the first row paid the kernel compilation in its first step):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1                 new       35644  10.8%  16.7%    21.98        -      -        -   21.62  188.9      1   171.8
    stage1+b16             new       41812  12.7%  19.5%    31.50        -      -        -   41.40    4.7      1   303.8
    stage1+b32             new       48646  14.8%  22.7%    51.39        -      -        -   80.97    4.4      1   512.2
    stage1+drop0           new       47233  14.3%  22.1%    20.47        -      -        -   21.62    1.6      1   144.1
    lora+b16               new      120264  38.7%  56.2%    23.20        -      -        -   17.45    3.0      1    75.4
    lora+b32               new      125914  40.5%  58.8%    35.28        -      -        -   33.21    1.3      1   143.1

Second lease, with the host time split into its parts (CLARA_ONLY=stage1,stage1+b32,lora+b32;
MLX's kernel cache of the first lease carried over: first step 2.3 s instead of 189 s):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1                 new       35816  10.9%  16.7%    21.98        -      -        -   21.62    2.3      1   173.9
    stage1+b32             new       47535  14.4%  22.2%    51.39        -      -        -   80.97    2.7      1   528.9
    lora+b32               new      127010  40.9%  59.3%    35.28        -      -        -   33.21    1.8      1   144.9
    host ms, stage1: batch 14.1, step 16.3, eval 142.7, tokens 0.2, dist 0.0
    host ms, stage1+b32: batch 52.2, step 22.4, eval 456.5, tokens 0.3, dist 0.0
    host ms, lora+b32: batch 4.9, step 5.7, eval 131.3, tokens 0.2, dist 0.0

What these say. The dropout-key change (one key per pass), first measured on the GPU here:
stage 1 at batch 8 went from 29391 to 35644-35816 tokens/s (+22 %, 8.9 % -> 10.8 % MFU).
LoRA SFT reaches the target at batch 16 and 32 (38.7-40.9 % MFU counted as 4N; 29.3 % at 8).
Stage 1 does not: 10.8 % at batch 8, 14.4-14.8 % at 32. "host ms" is not all host work: most
of it is mx.async_eval, which blocks while the device is a step behind (LoRA at 32: eval
131 ms of a 129 ms step). At batch 32 stage 1 is bound by the GPU's own time for its graph
(eval 456 ms of a 466 ms step, the graph's op count being the batch-8 one): 22137 tokens,
66 TFLOP, at ~143 TFLOP/s against LoRA's 52 TFLOP in 129 ms (~405 TFLOP/s). At batch 8 the
GPU's quarter of that (~117 ms) and the host's encoding (at most the 143 ms of eval) are about
even with the 155 ms step. Dropout costs 25 % of the step (drop0: 47.2k;
random bits over every adapted input, drawn again in the backward pass); the rest was not
isolated (the queuing itself, batch + step, is 30 ms at batch 8, 75 ms at 32: making the
batch is ~1.6 ms a row, mostly tokenizing the paraphrase prompts and documents). The estimate
(est GB) is off for compiled steps past batch 8 on CUDA: +31 % at 16, +58 % at 32, because its
CUDA factor (1.8x the kept activations) does not grow with the batch the way it assumes: the
measured peak grows ~1.2 GB a row, about what the backward keeps. (Later in session 8: the factor is replaced
by parts fitted to every H200 peak above, clara/train/estimate.py's table: stage1 b8/b16/b32
21.54/31.65/51.87 GB, lora b16/b32 21.56/35.48; the est GB columns here are the code of their
day.)

What they said before (session 6). The weights and what the backward keeps are 10 GB of stage 1's 21.85: the rest
is buffers of work the host has queued and the device has not yet run (MLX allocates when it
queues a kernel and frees when the device is done), not dtypes, not the look-ahead, not
mx.compile's constants. With MLX's memory limit the host waits for the device instead: 11.86 GB
(30 % slower), 8.44 GB with checkpointing and chunked CE (below the reference's 10.2 GB, at
0.9x its eager speed), 8.82 GB at 8B 4-bit batch 1 (under 10 GB, about half the speed in this
short run). LoRA at batch 8 x 512 already peaks under mlx-lm's trainer (10.65 vs 12.39 GB) at
1.65x its speed (42 % MFU). The engine now sets MLX's limit itself (clara/train/engine.py,
MEMORY_HOLD of memory_limit_gb). On the CPU the same effect is smaller (2 blocks of 1.1B,
batch 2, float32: backward transients 0.55 GB, 0.23 GB with the limit; they do not grow with
the number of blocks). Separately, the new tokens' mean rows were computed lazily from a whole
dequantized float32 copy of the 8B embedding and head inside the first step (7.4 GB of
transients on the CPU at 8B shapes); they are now made a chunk of rows at a time at install.

Session 9: where a stage-1 step's GPU time goes (nvidia-h200-x2 and nvidia-h200, one GPU).
1) Nsight Compute, one warm compiled step of the session-8 code, 4 blocks of the 1.1B shape at
   batch 32 (`CUDA_VISIBLE_DEVICES=0 bash scripts/gpu-check.sh profile`: ncu --metrics
   gpu__time_duration.sum --print-summary per-kernel, CUDA graphs off), 2005 kernels, 101.6 ms,
   grouped by kernel name:

    gemm (cuBLAS nvjet)                       38.20 ms  37.6 %   549 kernels
    rbits (MLX's threefry random bits)        12.32 ms  12.1 %   116
    fused elementwise (other)                 11.74 ms  11.6 %   387
    select (where): dropout's, the mask's      8.45 ms   8.3 %    99
    dropout's compare (bits < keep)            6.52 ms   6.4 %   114
    unfused elementwise (bf16 multiply ...)    6.48 ms   6.4 %   232
    scatter (3.46 ms: inject's gather vjp)     4.77 ms   4.7 %     4
    softmax over B x H x L x L                 3.15 ms   3.1 %     8
    copy                                       3.07 ms   3.0 %   264
    reduce                                     2.21 ms   2.2 %   163
    cross-entropy, gather, rms_norm, sdpa      4.68 ms   4.6 %    52

   Only 38 % of the kernel time is matrix products. Dropout's masks (threefry bits, the compare,
   the selects) are about a quarter. Attention's backward runs MLX's unfused fallback on CUDA
   under autodiff (cuDNN does the forward only): B x H x L x L scores, softmax, mask select and
   softmax backward per block, ~8 % plus its products. The gradient of inject's gather was a
   scatter with atomic adds of every decoder position into the slots (3.5 ms a step), and the
   LoRA scale a separate multiply over every adapter output and its gradient (73 kernels).
2) The step and its parts (bench/stage1_parts.py: the engine's compiled step on one batch,
   waited for each time; median of 5 after 2; `gpu-check.sh parts`), 1.1B, 16 blocks:

    lease, code                    batch  step     step-drop0  loss    enc     dec
    A (x2), session 8's code           8  167.6 ms   118.1 ms   52.2    57.1    90.0
    A (x2), session 8's code          32  486.2 ms   307.7 ms  154.7   186.3   271.6
    B (x2), this code + long hash     32  425.5 ms   289.5 ms  132.6   164.4   245.5

   and in a third lease (nvidia-h200, one GPU; a slower host: the same drop0 step at batch 8
   took 149.0 ms against 118.1), this code with each mask generator (`--parts step-hash,
   step-threefry,step-drop0`):

    batch  step-hash  step-threefry  step-drop0   (TFLOP/s of the threefry step, 4N)
       32   446.3 ms       467.1 ms    300.1 ms   142.4
        8   228.8 ms       195.4 ms    149.0 ms    85.3

3) The engine's rate, one lease (B), this code (its default then: the hash on a GPU; +threefry:
   MLX's draw, now the default everywhere) against session 8's (`old`), `CUDA_VISIBLE_DEVICES=0
   CLARA_BENCH_PEAKS=0 STEPS=10 CLARA_ARGS="--root OLD --root-variants" CLARA_ONLY=stage1,
   stage1+b32,stage1+threefry,stage1+b32+threefry bash scripts/gpu-check.sh clara` (the old
   code ignores +threefry: its rows are repeats; the first row paid the new kernels' build):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1                 new       24835   7.5%  11.6%    21.30        -      -        -   21.54   63.0      1   247.4
    stage1                 old       26309   8.0%  12.3%    21.98        -      -        -   21.54    2.6      1   239.8
    stage1+b32             new       47740  14.5%  22.3%    53.00        -      -        -   51.87    4.1      1   541.0
    stage1+b32             old       46818  14.2%  21.9%    51.39        -      -        -   51.87    2.8      1   539.7
    stage1+threefry        new       34505  10.5%  16.1%    21.60        -      -        -   21.54    1.9      1   182.2
    stage1+threefry        old       27865   8.5%  13.0%    21.97        -      -        -   21.54    3.4      1   222.3
    stage1+b32+threefry    new       44985  13.6%  21.0%    52.10        -      -        -   51.87    2.9      1   555.6
    stage1+b32+threefry    old       42943  13.0%  20.1%    51.39        -      -        -   51.87    3.0      1   581.8

What they say. Kept, all exact: the LoRA scale goes into B (r x out) instead of onto every
output (bit for bit the same with the default scale 2.0), inject takes each slot's vector by a
one-hot product (bit for bit the same values and gradients, no scatter), and a logits scale of 1
is not multiplied. Together, in one lease on one kind of machine: the dropout-free step at batch
32 went from 307.7 to 289.5 ms (-6 %), and the whole threefry step from 486.2 (A) to 467.1 ms
(C, on the slower one-GPU machine). Tried and left opt-in (CLARA_DROPOUT_RNG=hash): dropout
masks from an integer hash of (key, index) that mx.compile fuses into the kernel that applies
the mask (no random-bits kernel, no compare kernel): 4.5 % faster at batch 32, 17 % slower at
batch 8, where the step is bound by the host queuing its ops (the hash is 41 graph ops per
adapter call before fusion, threefry's draw at most 18: tests/test_memory.py); a first hash of
two MurmurHash finalisers passed mx.compile's fusion depth (11 ops) and wrote uint32
intermediates (+1.6 GB at batch 32). The engine's figures move by 5-10 % between runs of the
same code in one lease (old at b32: 46.8k and 42.9k; at b8 even making the batch took 15 or 25
ms), so their old/new differences are within that. MFU at 1.1B stays at 13.6-14.5 % (b32) and
8-10.5 % (b8), counted as 4N: the target 35 % is not met. What bounds it: only 38 % of the GPU's
kernel time is matrix products; the rest is dropout's masks (a quarter, and the step without
dropout is 36 % shorter), attention's unfused backward (MLX's CUDA fallback under autodiff), and
elementwise kernels MLX's fusion leaves apart; at batch 8 the host queuing ~7000 kernels.
Closing that needs kernels MLX does not have (fused attention backward on CUDA, a fused dropout-
LoRA kernel), not changes to clara's graph.

Session 10 (nvidia-h200, one GPU, 2026-11-30; one lease, the session-9 kernel cache carried).
1) The model-free parts of bench/stage1_parts.py (`--preset 1b --batch-size B --parts
   dropout,attn`): the CUDA dropout kernel's self-check (clara.method.adapters:
   kernel_dropped_lora against dropped_lora with the same hashed mask in MLX ops), one adapter
   call per mask generator, and causal attention alone, forward + backward per block, at the
   step's widths, at multiples of 128, and at the step's widths padded to 128 inside the call:

    dropout self-check: keep rate 0.90007 (kernel 0.90007, want 0.9), forward elements differing from the MLX ops 0 of 20185088, gradients' max relative difference {'x': 0.0, 'a': 0.0, 'b': 0.0}
    one adapter call [8x448x5632] -> 2048, forward + backward, compiled: none 0.869 ms, threefry 1.426 ms, hash 1.082 ms, kernel 1.091 ms
    attention B=8 H=32/4 D=64 L= 320: forward   0.165 ms, forward + backward   1.023 ms per block, padded to 128 in the call   0.470 ms
    attention B=8 H=32/4 D=64 L= 384: forward   0.172 ms, forward + backward   0.436 ms per block
    attention B=8 H=32/4 D=64 L= 448: forward   0.190 ms, forward + backward   1.245 ms per block, padded to 128 in the call   0.588 ms
    attention B=8 H=32/4 D=64 L= 512: forward   0.218 ms, forward + backward   0.527 ms per block
    a step's attention (16 blocks, encoder + decoder): at 320/448 36.3 ms, at 384/512 15.4 ms, at 320/448 padded in the call 16.9 ms
    dropout self-check: keep rate 0.89999 (kernel 0.89999, want 0.9), forward elements differing from the MLX ops 0 of 80740352, gradients' max relative difference {'x': 0.0, 'a': 0.0, 'b': 0.0}
    one adapter call [32x448x5632] -> 2048, forward + backward, compiled: none 1.873 ms, threefry 3.066 ms, hash 2.582 ms, kernel 2.573 ms
    attention B=32 H=32/4 D=64 L= 320: forward   0.434 ms, forward + backward   2.126 ms per block, padded to 128 in the call   1.265 ms
    attention B=32 H=32/4 D=64 L= 384: forward   0.433 ms, forward + backward   1.155 ms per block
    attention B=32 H=32/4 D=64 L= 448: forward   0.754 ms, forward + backward   3.177 ms per block, padded to 128 in the call   1.951 ms
    attention B=32 H=32/4 D=64 L= 512: forward   0.683 ms, forward + backward   1.627 ms per block
    a step's attention (16 blocks, encoder + decoder): at 320/448 84.9 ms, at 384/512 44.5 ms, at 320/448 padded in the call 51.5 ms

   The kernel is bit for bit the MLX ops' hash (forward and the three gradients), at 0.557 ->
   0.222 ms (b8) and 1.193 -> 0.700 ms (b32) of dropout per MLP-wide adapter call against
   threefry. Attention's backward is cuDNN's fused one only at query lengths that are multiples
   of 128 (MLX 0.32.4, ScaledDotProductAttentionVJP::use_fallback): at 320/448 it was MLX's
   unfused fallback, 2.3-2.4x (b8) and 1.8-2x (b32) the fused time at the longer 384/512.
   Padding q, k and v inside the call (clara.method.model._padded_sdpa; exact: causal, the pads
   after every real position, their output cut) gets nearly all of it: 36.3 -> 16.9 ms of a b8
   step's attention, 84.9 -> 51.5 ms at b32, without padding the rows through the whole model.
2) The engine's rate, `CUDA_VISIBLE_DEVICES=0 CLARA_BENCH_PEAKS=0 python3 bench/clara_throughput.py
   --preset 1b --steps 8 --warmup 2 --only stage1,stage1+kernel+attn128,stage1+b32,
   stage1+b32+kernel+attn128,lora+b32,stage1+kernel,stage1+attn128,stage1+b32+kernel,
   stage1+b32+attn128` (the code's defaults then: threefry, no attention padding; +kernel is
   CLARA_DROPOUT_RNG=kernel, +attn128 CLARA_ATTN_PAD=128; leaseA.sh of .dev-gpu10):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1                 new       35334  10.7%  16.5%    21.60        -      -        -   21.54    6.5      1   202.6
    stage1+kernel+attn128  new       43806  13.3%  20.5%    23.54        -      -        -   21.54    5.9      1   153.8
    stage1+b32             new       47108  14.3%  22.0%    52.10        -      -        -   51.87    2.8      1   553.1
    stage1+b32+kernel+attn128 new       61387  18.6%  28.7%    54.11        -      -        -   51.87    6.3      1   447.3
    lora+b32               new      133645  43.0%  62.4%    35.28        -      -        -   35.48    1.2      1   142.2
    stage1+kernel          new       36140  11.0%  16.9%    21.01        -      -        -   21.54    4.7      1   188.7
    stage1+attn128         new       30872   9.4%  14.4%    24.05        -      -        -   21.54    2.0      1   205.0
    stage1+b32+kernel      new       55136  16.7%  25.8%    50.90        -      -        -   51.87    5.3      1   476.8
    stage1+b32+attn128     new       52957  16.1%  24.7%    55.19        -      -        -   51.87    3.3      1   493.1

What they say. Together, the kernel and the padded attention make stage 1 24 % faster at batch
8 (35.3k -> 43.8k tokens/s, MFU 10.7 -> 13.3 %) and 30 % at batch 32 (47.1k -> 61.4k, 14.3 ->
18.6 %); alone, the kernel 2 % (b8, within the 5-10 % the b8 rows move between runs) and 17 %
(b32), the padding -13 % (b8: not isolated; making the batch and queuing the step took the
host 15 ms more in that row, the rest of the step the same) and 12 % (b32). Both are now the default on CUDA (adapters.dropout_rng, model.attention_pad; CPU and
Metal unchanged: threefry, no padding), so a plain `stage1` row there is the
`stage1+kernel+attn128` row here; `+threefry+attn0` gives the old step. The peak grows 1.9 GB
at b8 (21.60 -> 23.54, the estimate's 21.54 now 8.5 % under it) and 2.0 GB at b32 (52.10 ->
54.11), from the padded attention (24.05 alone at b8; the kernel alone 21.01): likely its
padded q, k, v, output and statistics kept for cuDNN's backward, not measured by part. The CUDA tests ran with both on
(test_method_stages 9 of 9, test_method_checkpoint 4 of 4, test_memory's dropout and chunked-CE
tests 4 + 1 skipped, as before). LoRA SFT at batch 32: 133.6k tokens/s, 43.0 % MFU (4N), the
target met again. Stage-1 MFU >= 35 % is still not: 13.3 % (b8) and 18.6 % (b32). Not run:
a kernel profile of the new step, the 8B rows, the decode bench.
Then the memory target at the reference's shapes with the new defaults, one more lease
(coordinator; `--preset 1b --steps 8 --warmup 2 --only stage1+chunk+ckpt+lim8+kernel+attn128,
stage1+chunk+ckpt+lim8,stage1+kernel+attn128`, CLARA_BENCH_PEAKS=0, the same code):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1+chunk+ckpt+lim8+kernel+attn128 new       19535   5.9%   9.1%     8.18        -      -        -    8.48   71.1      1   315.5
    stage1+chunk+ckpt+lim8 new       17490   5.3%   8.2%     8.61        -      -        -    8.48    9.0      1   371.4
    stage1+kernel+attn128  new       41981  12.7%  19.6%    23.54        -      -        -   21.54    5.0      1   158.3

With checkpointing, chunked CE and an 8 GB MLX limit the new defaults lower the peak (8.61 ->
8.18 GB, the reference 10.2) and raise the speed 12 % (17.5k -> 19.5k tokens/s, 1.49x the
reference's eager 13.1k): the memory target holds.

Session 11 (nvidia-h200, one GPU, 2026-12-01; session 10's kernel cache carried; two leases,
each one driver running the commands given with each table). MFU is counted two ways: MFU6N is the issue's, 6 * N * tokens/s over
989 TFLOP/s (N = 0.770B block weights + head, every real token, encoder's too); MFU is our
stricter step_flops (about 4N: frozen base, the head only where the loss needs it).
1) Where a step's GPU time goes, today's defaults (dropout kernel, attention padded to 128):
   Nsight Compute, one warm compiled step, 4 blocks of the 1.1B shape at batch 32, CUDA graphs
   off (`ncu --profile-from-start off --metrics gpu__time_duration.sum,launch__grid_size
   ... python3 bench/stage1_parts.py --preset 1b --ncu --layers 4 --batch-size 32`), grouped
   by `python bench/stage1_parts.py --ncu-csv ncu_raw.csv` (kernel_shares; a gemm whose
   cuBLAS tile has a side <= 32 is counted as LoRA's rank-16 products):

    gemm, wide tiles                28.82 ms  35.1 %   227
    dropout kernel                  13.57 ms  16.5 %   112
    copy / gather / scatter         11.00 ms  13.4 %   264
    elementwise                      7.78 ms   9.5 %   283
    gemm, thin tiles (LoRA)          5.57 ms   6.8 %   281
    attention (cuDNN SDPA)           5.32 ms   6.5 %    48
    fused elementwise                4.97 ms   6.1 %   314
    other                            1.34 ms   1.6 %    32
    softmax / CE                     1.31 ms   1.6 %     2
    norm                             1.12 ms   1.4 %    36
    reduce                           1.08 ms   1.3 %   253
    gemm                             0.17 ms   0.2 %     3
    random bits                      0.01 ms   0.0 %     4
    total                           82.05 ms         1859

   The biggest share beside the gemms is the LoRA chain, not the products themselves: the
   dropout kernels (forward 95 us, backward 148 us a call: 1.3-1.7 TB/s, scalar bf16 loads),
   the unfused adds of each adapter's output to its base projection's and of its input
   gradient to the base's (binary_vv Add, 72 calls, 4.1 ms), then the copies (a third of them
   the [B, 448, vocab] logits around the CE, once a step, not per block).
2) The engine's rate (`CLARA_BENCH_PEAKS=0 python3 bench/clara_throughput.py --preset 1b
   --steps 8 --warmup 2 --only stage1+b32,stage1+b32+fold,stage1+b64,stage1+b64+fold,lora+b32,
   stage1,stage1+fold`; +fold is adapters.lora_fold, then opt-in: the adapter's output added in
   the base gemm's epilogue, mx.addmm, and its input gradient in the base's input-gradient
   gemm, one custom_function):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1+b32             new       66395  20.1%  31.0%    54.11        -      -        -   51.87    4.6      1   401.5
    stage1+b32+fold        new       70152  21.3%  32.8%    54.27        -      -        -   51.87    4.3      1   383.9
    stage1+b64             new       73166  22.2%  34.2%    89.74        -      -        -   92.31    6.9      1   727.9
    stage1+b64+fold        new       76631  23.2%  35.8%    90.99        -      -        -   92.31    4.9      1   700.1
    lora+b32               new      133826  43.1%  62.5%    35.28        -      -        -   35.48    1.0      1   142.9
    stage1                 new       42957  13.0%  20.1%    23.54        -      -        -   21.54    4.1      1   152.5
    stage1+fold            new       52278  15.9%  24.4%    23.61        -      -        -   21.54    4.2      1   124.0

   8B 4-bit, batch 1, the new CUDA defaults (`--preset 8b-q4 --steps 4 --warmup 1 --only
   stage1+chunk+ckpt+lim8`; a quantized base is never folded):

    stage1+chunk+ckpt+lim8 new        1351   4.0%   6.2%     8.30        -      -        -    9.79  128.4      1   764.2

   (8.30 GB, under the 10 GB target; session 9's 8.82 GB.) `GPU_TESTS="tests/test_chat.py
   tests/test_train.py" bash scripts/gpu-check.sh tests`: 14 passed (50 s), 15 passed (15 s).
   `bash scripts/gpu-check.sh rag`: chat decode 494.7 tok/s against mlx_lm.generate's 506.8
   (0.98x, target >= 0.95); CLaRa's prompt 4.77x shorter than raw-text RAG's (203 against 968
   tokens), but its time to first token longer (0.072 against 0.064 s: on this GPU a 968-token
   prefill of a 1B model costs about what placing the compressed vectors does).
3) The change, from 1): the dropout kernels 8 elements a thread through 16-byte loads (2-byte
   dtypes; adapters._CUDA_FWD8/_CUDA_BWD8, bit for bit the same mask and values: self-check
   `stage1_parts.py --parts dropout` 0 of 80 740 352 elements differ, gradients' difference
   0.0; one MLP-wide adapter call 2.701 -> 2.225 ms), the adapters folded into the base gemms
   (lora_fold, keeping the forward's [tokens, rank] product for the backward), stage 1's CE
   over positions 0..L-2 (no slicing of the whole logits). Before/after in one lease,
   interleaved (`--only` the rows below; `+nofold+scalar+slicelogits` is session 10's step;
   +swiglu is model.fused_swiglu, opt-in):

    work                   code      tok/s    MFU  MFU6N  peak GB  weights    fwd  fwd+bwd  est GB  1st s traces host ms
    stage1+b32+nofold+scalar+slicelogits new       64553  19.6%  30.2%    54.11        -      -        -   51.87    5.8      1   411.2
    stage1+b32             new       79010  24.0%  36.9%    54.48        -      -        -   51.87    4.5      1   327.8
    stage1+nofold+scalar+slicelogits new       44690  13.6%  20.9%    23.54        -      -        -   21.54    4.8      1   146.2
    stage1                 new       55787  16.9%  26.1%    23.78        -      -        -   21.54    4.1      1   114.9
    stage1+b32+swiglu      new       78635  23.9%  36.7%    47.32        -      -        -   51.87   11.5      1   333.7
    stage1+swiglu          new       52693  16.0%  24.6%    24.43        -      -        -   21.54    4.1      1   123.7
    stage1+b64+nofold+scalar+slicelogits new       63761  19.3%  29.8%    87.89        -      -        -   92.31    6.0      1   833.0
    stage1+b64             new       80808  24.5%  37.8%    89.48        -      -        -   92.31    5.3      1   656.3
    stage1+b64+swiglu      new       81428  24.7%  38.0%    77.96        -      -        -   92.31    5.0      1   642.5
    stage1+b32+scalar      new       66965  20.3%  31.3%    54.48        -      -        -   51.87    4.5      1   384.9
    stage1+b32+slicelogits new       78963  24.0%  36.9%    54.52        -      -        -   51.87    4.8      1   327.4
    stage1+b32+nofold      new       74193  22.5%  34.7%    53.58        -      -        -   51.87    4.7      1   358.0

   and the profile of 1) again with the new defaults:

    gemm, wide tiles                30.25 ms  42.5 %   227
    copy / gather / scatter          9.86 ms  13.9 %   266
    dropout kernel                   7.19 ms  10.1 %   112
    elementwise                      5.63 ms   7.9 %   251
    attention (cuDNN SDPA)           5.37 ms   7.5 %    48
    gemm, thin tiles (LoRA)          4.48 ms   6.3 %   225
    fused elementwise                3.24 ms   4.6 %   290
    other                            1.35 ms   1.9 %    32
    softmax / CE                     1.31 ms   1.8 %     2
    norm                             1.17 ms   1.6 %    36
    reduce                           1.06 ms   1.5 %   253
    gemm                             0.18 ms   0.3 %     3
    random bits                      0.01 ms   0.0 %     4
    total                           71.10 ms         1749

What they say. Stage 1 at 1.1B is now 22 % faster at batch 32 (64.6k -> 79.0k tokens/s), 25 %
at 8 (44.7k -> 55.8k) and 27 % at 64 (63.8k -> 80.8k) than session 10's step in the same lease:
MFU6N 36.9 % at b32 and 37.8 % at b64, the issue's 35 % met (our stricter count 24.0 / 24.5 %;
b8 26.1 / 16.9 %). Of it, the 8-wide dropout kernels +18 % (b32: +scalar 67.0k), the fold
+6.5 % (+nofold 74.2k; lease 1: +5.7 % at b32, +4.7 % at b64, +22 % at b8, where it also cuts
the host's queuing), the CE without slicing nothing measurable (78.96k against 79.01k). The
fused SwiGLU backward is no faster (b32 -0.5 %, b8 -5.5 %, b64 +0.8 %), so it stays opt-in,
though it lowers the peak by 7.2 GB at b32 and 11.5 GB at b64 (autodiff keeps silu(gate) and
its sigmoid for the backward). The step's kernel time (4 blocks, b32) went from 82.1 to 71.1 ms;
what is left beside the gemms: copies (the whole-logits ones still there: from the CE's float32
cast and its gradient, not the slicing), the dropout kernels (10 %), unfused adds. CUDA tests
with the new defaults: test_method_stages 9/9, test_method_checkpoint 4/4, test_memory's
dropout tests 3 + 1 skipped (its CUDA peak part), fused_swiglu's 1 (after the float32 fix:
the first run of the 8-wide kernels read float32 8 to a 16-byte load, NaN; now only 2-byte
dtypes take them).
After the merge the shifted CE became opt-in (CLARA_CE_SHIFT=1, bench +shift): it measured no
faster (the rows above: 78 963 sliced against 79 010 shifted at b32), and on the CPU its
rounding differs (the demo's stage 1 moved in the 4th digit by step 30, and the demo's stage-3
retrieval figure with it), so the default step is the rows' `+slicelogits` one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRESETS = {
    # name: model shape, batch geometry, dtype, quantization
    "cpu": dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=704, vocab=8000,
                batch_size=4, doc=128, cr=16, seq=256, rank=16, dtype="bfloat16", bits=0),
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=4, intermediate=5632, vocab=32000,
               batch_size=8, doc=256, cr=16, seq=512, rank=16, dtype="bfloat16", bits=0),
    "8b-q4": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336,
                  vocab=128256, batch_size=1, doc=256, cr=16, seq=512, rank=16,
                  dtype="bfloat16", bits=4),
}
PEAK_FLOPS = 989e12  # H200 dense bf16


def make_words(n: int, rng: random.Random) -> str:
    vocab = ("the a mill tower archive harbour orchard river glass salt bell north built "
             "repaired guarded painted sold found in of and by with year old new city keeper "
             "long short water stone road market light dark").split()
    return " ".join(rng.choice(vocab) for _ in range(n))


# ---------------------------------------------------------------------------------- building
def model_config(s: dict, tokenizer) -> dict:
    from clara.models.tiny import TinyConfig, llama_config

    cfg = llama_config(TinyConfig(hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                  num_attention_heads=s["heads"],
                                  num_key_value_heads=s["kv_heads"],
                                  intermediate_size=s["intermediate"]), s["vocab"], tokenizer)
    cfg["torch_dtype"] = s["dtype"]
    cfg["tie_word_embeddings"] = s["vocab"] < 100000  # Llama-3 8B has an untied head
    return cfg


def build(s: dict, folder: Path) -> dict:
    """A random Llama of shape `s` saved in its dtype (quantized when bits), and the data."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_map
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model

    from clara import io
    from clara.models.tiny import train_tokenizer

    rng = random.Random(0)
    texts = [make_words(400, rng) for _ in range(64)]
    tok = train_tokenizer(texts, 512)
    cfg = model_config(s, tok)
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    dtype = getattr(mx, s["dtype"])
    for layer in [model.model.embed_tokens, *model.model.layers, model.model.norm,
                  *([model.lm_head] if "lm_head" in model else [])]:
        # layer by layer: an 8B model never exists whole in float32
        layer.update(tree_map(lambda p: p.astype(dtype), layer.parameters()))
        mx.eval(layer.parameters())
    if s["bits"]:
        nn.quantize(model, group_size=64, bits=s["bits"])
        cfg["quantization"] = {"group_size": 64, "bits": s["bits"]}
    mx.eval(model.parameters())
    mdir = folder / "model"
    mdir.mkdir(parents=True)
    save_model(mdir, model)
    save_config(cfg, mdir / "config.json")
    tok.save_pretrained(str(mdir))
    del model

    def cut(text: str, n: int) -> str:
        ids = tok.encode(text, add_special_tokens=False)
        return tok.decode(ids[:n])

    rows = []
    for i in range(max(64, 4 * s["batch_size"])):
        doc = cut(make_words(2 * s["doc"], rng), s["doc"])
        rows.append({"data_type": "paraphrase", "answers": [doc], "docs": [doc]})
    io.write_jsonl(folder / "stage1" / "train.jsonl", rows)
    lora_rows = [{"text": cut(make_words(2 * s["seq"], rng), s["seq"])} for _ in range(64)]
    io.write_jsonl(folder / "lora" / "train.jsonl", lora_rows)
    return cfg


# ---------------------------------------------------------------------------------- children
def median_rate(rates: list[float], warmup: int) -> float:
    xs = sorted(rates[warmup:] or rates)
    return xs[len(xs) // 2]


def steady_rate(rows: list[dict], warmup: int) -> float:
    """Tokens over seconds of the steps after the warm-up, from the engine's cumulative counts:
    with the step look-ahead a step can be read just after the one before it, so one step's
    own rate says little and a median of a few of them can be far off."""
    w = min(max(warmup, 1), len(rows) - 1)
    if w < 1:
        return rows[-1]["tokens"] / rows[-1]["elapsed_s"]
    return (rows[-1]["tokens"] - rows[w - 1]["tokens"]) / \
        (rows[-1]["elapsed_s"] - rows[w - 1]["elapsed_s"])


def component_peaks(task, model) -> dict:
    """Uncompiled peaks (bytes, over the weights) of the forward, and of forward + backward, of
    one batch; for CLaRa also what the backward pass keeps of each part of the forward."""
    import mlx.core as mx
    import mlx.nn as nn

    batch = next(iter(task.train_batches(0, 0)))
    mx.eval(batch)
    fpt = step_flops(model_cfg_of(task), batch, task_rank(task)) / task.batch_tokens(batch)
    shapes = {k: list(v.shape) for k, v in (batch.items() if isinstance(batch, dict)
                                            else zip(("tokens", "lengths"), batch))}
    if os.environ.get("CLARA_BENCH_PEAKS") == "0":  # speed alone: no uncompiled passes first
        return {"flops_per_token": fpt, "batch_shapes": shapes}
    mx.clear_cache()
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    out = task.loss(model, batch)
    mx.eval(out)
    fwd = mx.get_peak_memory()
    del out
    mx.clear_cache()
    mx.reset_peak_memory()
    vg = nn.value_and_grad(model, lambda m, b: task.loss(m, b)[0])
    out = vg(model, batch)
    mx.eval(out)
    bwd = mx.get_peak_memory()
    del out
    mx.clear_cache()
    res = {"flops_per_token": fpt, "weights_bytes": base, "forward_peak_bytes": fwd,
           "forward_backward_peak_bytes": bwd, "batch_shapes": shapes}
    if isinstance(batch, dict) and "enc_ids" in batch:
        res["kept_bytes"] = clara_kept(model, batch)
    return res


def model_cfg_of(task) -> dict:
    m = task.model.lm if hasattr(task.model, "lm") else task.model
    a = m.args
    return {"hidden_size": a.hidden_size, "intermediate_size": a.intermediate_size,
            "num_hidden_layers": a.num_hidden_layers, "num_attention_heads": a.num_attention_heads,
            "num_key_value_heads": a.num_key_value_heads, "vocab_size": a.vocab_size}


def task_rank(task) -> int:
    c = getattr(task.model, "config", None)
    return int(getattr(c, "lora_rank", 0) or getattr(getattr(task, "cfg", None), "lora_rank", 0)
               or 16)


def clara_kept(model, b) -> dict:
    """What the backward pass keeps of each part of a CLaRa stage-1 forward (bytes): active
    memory after evaluating the loss while the gradients are still pending, for the encoder
    alone, the encoder plus the decoder's blocks, plus the head and CE, and the whole loss."""
    import mlx.core as mx
    import mlx.nn as nn

    def enc(m, b):
        comp, mse = m.compress(b["enc_ids"], b["enc_mask"], b["enc_mem_pos"])
        return comp.astype(mx.float32).sum() + mse

    def blocks(m, b):
        comp, mse = m.compress(b["enc_ids"], b["enc_mask"], b["enc_mem_pos"])
        return m.decode_hidden(b, comp, 1).astype(mx.float32).sum() + mse

    def full(m, b):
        return m.stage_loss(b)[0]

    out = {}
    for name, f in (("encoder", enc), ("encoder+decoder blocks", blocks), ("full loss", full)):
        mx.clear_cache()
        base = mx.get_active_memory()
        loss, grads = nn.value_and_grad(model, f)(model, b)
        mx.eval(loss)
        out[name] = mx.get_active_memory() - base
        del loss, grads
    mx.clear_cache()
    return out


def engine_run(task, cfg, warmup: int) -> dict:
    import mlx.core as mx

    from clara import io
    from clara.train.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        mx.clear_cache()
        mx.reset_peak_memory()
        tic = time.perf_counter()
        eng = Engine(task, cfg, tmp)
        eng.run()
        wall = time.perf_counter() - tic
        rows = [r for r in io.read_jsonl(Path(tmp) / "metrics.jsonl") if "train_loss" in r]
    steps = [r["tokens"] for r in rows]
    return {"peak_bytes": mx.get_peak_memory(), "tokens_per_second": steady_rate(rows, warmup),
            "tokens_per_step": (steps[-1] - steps[0]) / max(1, len(steps) - 1),
            "first_step_s": rows[0]["elapsed_s"], "wall_s": wall,
            # how often the step was traced; the median host time of queuing one step
            **({"traces": eng.traces,
                "host_ms_per_step": 1e3 * sorted(eng.host_times)[len(eng.host_times) // 2]}
               if hasattr(eng, "traces") else {}),  # (not in an older checkout)
            # the median of each part of queuing a step (ms): batch, step call, async_eval, ...
            **({"host_parts_ms": {k: 1e3 * sorted(p[k] for p in eng.host_parts)[
                len(eng.host_parts) // 2] for k in eng.host_parts[0]}}
               if getattr(eng, "host_parts", None) else {}),
            "losses": [r["train_loss"] for r in rows]}


def child(args) -> dict:
    sys.path.insert(0, args.root)
    import mlx.core as mx

    s = json.loads(args.shape)
    folder = Path(args.work)
    model_dir = str(folder / "model")
    common = dict(iters=args.steps, val_every=0, save_every=10**6, report_every=1,
                  grad_clip=1.0, learning_rate=1e-4, seed=0)
    # variants: stage1+ckpt (gradient checkpointing), +chunk (chunked CE), +eager (no compile)
    kind, *opts = args.child.split("+")
    for o in opts:  # +bN: batch N on the same model and rows (where the GPU, not the host, bounds)
        if o[:1] == "b" and o[1:].isdigit():
            s["batch_size"] = int(o[1:])
    common["grad_checkpoint"] = "ckpt" in opts
    common["compile"] = "eager" not in opts
    args.child = kind
    if args.child == "stage1":
        from clara.method.tasks import ClaraTrainConfig, build_task

        cfg = ClaraTrainConfig(model=model_dir, data=str(folder / "stage1"),
                               batch_size=s["batch_size"], doc_max_tokens=s["doc"],
                               compression_rate=s["cr"], lora_rank=s["rank"], **common,
                               **({"lora_dropout": float(o[4:]) for o in opts
                                   if o.startswith("drop")}),
                               **({"chunked_ce": "chunk" in opts} if {"chunk", "nochunk"} & set(opts)
                                  else {}))
        task = build_task(cfg, "stage1")
        out = component_peaks(task, task.model)
        out.update(engine_run(task, cfg, args.warmup))
    elif args.child == "lora":
        from clara.train.config import TrainConfig
        from clara.train.lora import LoraTask

        cfg = TrainConfig(model=model_dir, data=str(folder / "lora"), mode="cpt",
                          batch_size=s["batch_size"], max_seq_length=s["seq"] + 1,
                          lora_rank=s["rank"], dtype=s["dtype"], **common)
        task = LoraTask(cfg, model_dir, folder / "lora")
        out = component_peaks(task, task.model)
        out.update(engine_run(task, cfg, args.warmup))
    else:  # mlx-lm's own trainer: its load, LoRA layers, loss and loop; our batches
        import mlx.optimizers as optim
        from mlx_lm import load
        from mlx_lm.tuner.callbacks import TrainingCallback
        from mlx_lm.tuner.trainer import TrainingArgs, default_loss, train
        from mlx_lm.tuner.utils import linear_to_lora_layers

        from clara import io
        from clara.train.lora import make_batches

        mx.reset_peak_memory()
        model, tok = load(model_dir)
        model.freeze()
        mx.random.seed(0)
        linear_to_lora_layers(model, -1, {"rank": s["rank"], "scale": 20.0, "dropout": 0.0})
        samples = [(tok.encode(r["text"]), 0) for _, r in io.iter_jsonl(folder / "lora/train.jsonl")]
        batches = make_batches(samples, s["batch_size"], s["seq"] + 1)
        counts: list[int] = []

        def it(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
            while True:
                for t, lens in batches:
                    counts.append(int(lens[:, 1].sum()))
                    yield mx.array(t), mx.array(lens)
                if not loop:
                    return

        class Rec(TrainingCallback):
            times: list = []
            losses: list = []

            def on_train_loss_report(self, info):
                self.times.append(time.perf_counter())
                self.losses.append(info["train_loss"])

        rec = Rec()
        targs = TrainingArgs(batch_size=s["batch_size"], iters=args.steps, steps_per_report=1,
                             steps_per_eval=10**9, steps_per_save=10**9,
                             max_seq_length=s["seq"] + 1,
                             adapter_file=str(folder / f"mlx_lm_{os.getpid()}.safetensors"))
        tic = time.perf_counter()
        import contextlib
        import io as io_

        with contextlib.redirect_stdout(io_.StringIO()):
            train(model, optim.AdamW(learning_rate=1e-4), train_dataset=[0] * s["batch_size"],
                  args=targs, loss=default_loss, iterate_batches=it, training_callback=rec)
        t = [tic] + rec.times
        rates = [counts[i] / (t[i + 1] - t[i]) for i in range(len(rec.times))]
        out = {"peak_bytes": mx.get_peak_memory(), "tokens_per_second": median_rate(rates, args.warmup),
               "tokens_per_step": sum(counts[:args.steps]) / args.steps,
               "first_step_s": t[1] - t[0], "losses": rec.losses}
    return out


# ---------------------------------------------------------------------------------- parent
def forward_params(cfg: dict) -> int:
    """Parameters a token passes through: blocks and the head (not the input lookup)."""
    h, i, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    return L * (2 * h * h + 2 * h * kv + 3 * h * i) + V * h


def pass_flops(cfg: dict, lengths, head_positions: int, rank: int = 0) -> float:
    """Forward FLOPs of one pass over rows of `lengths` real tokens: every block matmul, causal
    attention (scores and mixing over each query's earlier keys), LoRA pairs of rank `rank` on
    every projection, and the output head over the `head_positions` whose logits are needed."""
    h, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    block = 2 * h * q + 2 * h * kv + 3 * h * i
    lora = rank * ((h + q) * 2 + 2 * (h + kv) + 3 * (h + i))
    T = sum(lengths)
    attn = sum(2 * 2 * q * n * (n + 1) / 2 for n in lengths)
    return 2 * L * (block + lora) * T + L * attn + 2 * cfg["vocab_size"] * h * head_positions


def step_flops(cfg: dict, batch, rank: int) -> float:
    """Model FLOPs of one training step of a LoRA-style run (frozen base, trained adapters):
    the forward, and a backward that makes the input gradients of every matmul (as many FLOPs
    again) and weight gradients for the adapters only (counted in `pass_flops`'s LoRA term, x2).
    The same rule for CLaRa and LoRA: CLaRa's encoder pass (no head: its states are the
    output) plus its decoder pass (head over the supervised positions); LoRA's one pass."""
    import numpy as np

    if isinstance(batch, dict):  # CLaRa: encoder rows, decoder rows, supervised positions
        enc = np.asarray(batch["enc_mask"]).sum(axis=1).tolist()
        dec = np.asarray(batch["dec_mask"]).sum(axis=1).tolist()
        sup = int((np.asarray(batch["labels"])[:, 1:] != -100).sum())
        fwd = pass_flops(cfg, enc, 0, rank) + pass_flops(cfg, dec, sup, rank)
    else:
        lens = np.asarray(batch[1])
        fwd = pass_flops(cfg, lens[:, 1].tolist(), int((lens[:, 1] - 1 - lens[:, 0]).sum()), rank)
    return 2 * fwd


def run_child(kind: str, root: str, s: dict, work: Path, steps: int, warmup: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--root", root, "--shape", json.dumps(s),
           "--work", str(work), "--steps", str(steps), "--warmup", str(warmup)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    for opt in kind.split("+")[1:]:  # engine settings read from the environment
        if opt == "seq":
            env["CLARA_STEP_AHEAD"] = "0"
        elif opt.startswith("lim"):
            env["CLARA_MLX_MEMORY_LIMIT_GB"] = opt[3:]
        elif opt.startswith("pad"):
            env["CLARA_PAD_MULTIPLE"] = opt[3:]
        elif opt.startswith("attn"):  # causal attention padded inside the call (model.py)
            env["CLARA_ATTN_PAD"] = opt[4:]
        elif opt in ("threefry", "hash", "kernel"):  # adapters.dropout_rng
            env["CLARA_DROPOUT_RNG"] = opt
        elif opt in ("fold", "nofold"):  # adapters.lora_fold
            env["CLARA_LORA_FOLD"] = "1" if opt == "fold" else "0"
        elif opt == "scalar":  # adapters' scalar CUDA dropout kernels, not the 8-wide ones
            env["CLARA_DROPOUT_VEC"] = "0"
        elif opt == "swiglu":  # model.fused_swiglu
            env["CLARA_SWIGLU"] = "fused"
        elif opt in ("slicelogits", "shift"):  # the decoder's CE: whole logits sliced (the
            env["CLARA_CE_SHIFT"] = "1" if opt == "shift" else "0"  # default) or shifted
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][-300:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    for k in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab", "batch_size",
              "doc", "cr", "seq", "rank", "bits"):
        p.add_argument("--" + k.replace("_", "-"), type=int, help="override the preset's")
    p.add_argument("--dtype", help="override the preset's")
    p.add_argument("--only", default="stage1,lora,mlx-lm",
                   help="comma list of stage1, lora, mlx-lm; variants add +ckpt (gradient "
                        "checkpointing), +chunk / +nochunk (stage1: chunked CE on / off), +eager "
                        "(no mx.compile), +seq (no step look-ahead), +limX (MLX memory limit "
                        "X GB), +threefry / +hash / +kernel (CLaRa's dropout masks), +fold / +nofold (adapters.lora_fold), +scalar (the scalar CUDA dropout kernels), +swiglu (model.fused_swiglu), +slicelogits / +shift (stage 1's CE over sliced logits, the default, or the head over positions 0..L-2: CLARA_CE_SHIFT), +padX (CLaRa rows padded to a multiple of X), +attnX (CLaRa's causal attention padded to a multiple of X inside the call), +dropX (CLaRa "
                        "LoRA dropout X), +bN (batch N), e.g. stage1+nochunk+eager; CLARA_BENCH_PEAKS=0 "
                        "skips the uncompiled per-component peaks")
    p.add_argument("--root", action="append", default=[],
                   help="also measure the clara of this checkout (e.g. an older one)")
    p.add_argument("--root-variants", action="store_true",
                   help="run the --root checkouts on the variants (+...) too, not only on the "
                        "plain kinds")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", help="result file (default bench/results/clara_throughput-DATE.json)")
    p.add_argument("--child"), p.add_argument("--shape"), p.add_argument("--work")
    args = p.parse_args(argv)
    if args.child:
        args.root = args.root[0]
        print(json.dumps(child(args)))
        return 0

    sys.path.insert(0, str(ROOT))
    from clara import io
    from clara.platform import describe

    s = dict(PRESETS[args.preset])
    s.update({k: v for k, v in vars(args).items() if k in s and v is not None})
    roots = [("new", str(ROOT))] + [(f"old{i or ''}", r) for i, r in enumerate(args.root)]
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        tic = time.perf_counter()
        cfg = build(s, work)
        print(f"built {args.preset} model in {time.perf_counter() - tic:.1f}s", file=sys.stderr)
        for kind in args.only.split(","):
            own = [("mlx-lm", str(ROOT))] if kind == "mlx-lm" else roots[:1] \
                if "+" in kind and not args.root_variants else roots
            for name, root in own:
                # CLARA_BENCH_DEADLINE (epoch seconds, a lease's end): rows after it are not
                # run, so that the table of those that were is still printed
                if time.time() > float(os.environ.get("CLARA_BENCH_DEADLINE") or "inf"):
                    rows.append({"kind": kind, "code": name, "error": "not run (time)"})
                    continue
                r = run_child(kind, root, s, work, args.steps, args.warmup)
                r.update(kind=kind, code=name)
                rows.append(r)
                print(f"  {kind} {name}: {({k: v for k, v in r.items() if k != 'losses'})}",
                      file=sys.stderr)
    N = forward_params(cfg)
    for r in rows:
        if "tokens_per_second" in r:
            r["mfu_6n"] = 6 * N * r["tokens_per_second"] / PEAK_FLOPS
            fpt = r.get("flops_per_token") or next(  # mlx-lm: the same batches as lora's
                (x["flops_per_token"] for x in rows if x["kind"].startswith("lora")
                 and "flops_per_token" in x), None)
            if fpt:
                r["mfu"] = fpt * r["tokens_per_second"] / PEAK_FLOPS
    try:
        from clara.train.estimate import estimate_for_bench

        for r in rows:
            if "error" not in r:
                shapes = r.get("batch_shapes") or next(
                    (x.get("batch_shapes") for x in rows if x["kind"] == "lora"), None)
                sb = dict(s, batch_size=next((int(o[1:]) for o in r["kind"].split("+")[1:]
                                              if o[:1] == "b" and o[1:].isdigit()),
                                             s["batch_size"]))
                r["estimate_bytes"] = estimate_for_bench(cfg, sb, r["kind"], shapes,
                                                         dropout=0.1 if "stage" in r["kind"] else 0)
                r["estimate_parts"] = estimate_for_bench(cfg, sb, r["kind"], shapes, parts=True,
                                                         dropout=0.1 if "stage" in r["kind"] else 0)
    except ImportError:  # an older checkout measured alone
        pass
    result = {"platform": describe(), "shape": s, "preset": args.preset, "forward_params": N,
              "rows": rows}
    out = Path(args.json) if args.json else \
        ROOT / "bench" / "results" / f"clara_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    io.write_json(out, result)
    gb = 1e9
    print(f"{args.preset}: {json.dumps(s)}  N={N / 1e9:.3f}B")
    print(f"{'work':<22} {'code':<6} {'tok/s':>8} {'MFU':>6} {'MFU6N':>6} {'peak GB':>8} "
          f"{'weights':>8} {'fwd':>6} {'fwd+bwd':>8} {'est GB':>7} {'1st s':>6} {'traces':>6} "
          f"{'host ms':>7}")
    for r in rows:
        if "error" in r:
            print(f"{r['kind']:<18} {r['code']:<7} error: {r['error']}")
            continue
        f = lambda k: f"{r[k] / gb:.2f}" if k in r else "-"  # noqa: E731
        pct = lambda k: f"{100 * r[k]:>5.1f}%" if k in r else f"{'-':>6}"  # noqa: E731
        host = f"{r['host_ms_per_step']:.1f}" if "host_ms_per_step" in r else "-"
        print(f"{r['kind']:<22} {r['code']:<6} {r['tokens_per_second']:>8.0f} {pct('mfu')} "
              f"{pct('mfu_6n')} {f('peak_bytes'):>8} {f('weights_bytes'):>8} "
              f"{f('forward_peak_bytes'):>6} {f('forward_backward_peak_bytes'):>8} "
              f"{f('estimate_bytes'):>7} {r['first_step_s']:>6.1f} {r.get('traces', '-'):>6} "
              f"{host:>7}")
    for r in rows:
        if r.get("host_parts_ms"):
            print(f"host ms, {r['kind']}: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                     r["host_parts_ms"].items()))
    for r in rows:  # where a CLaRa step's memory goes (uncompiled, kept for the backward pass)
        k = r.get("kept_bytes")
        if k:
            enc, blocks, full = (k[n] / gb for n in ("encoder", "encoder+decoder blocks",
                                                     "full loss"))
            print(f"kept for backward, {r['kind']} {r['code']}: encoder {enc:.2f} GB, decoder "
                  f"blocks {blocks - enc:.2f} GB, head + CE {full - blocks:.2f} GB; "
                  f"backward transients {(r['forward_backward_peak_bytes'] - r['weights_bytes']) / gb - full:.2f} GB")
        if r.get("estimate_parts"):
            print(f"estimate, {r['kind']}: " + ", ".join(f"{n} {v / gb:.2f}" for n, v in
                                                        r["estimate_parts"].items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
