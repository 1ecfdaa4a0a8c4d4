/* seq2seq_kit.models._gemv: a product of a few float32 rows by a weight, y [M, N] = x [M, K] @ w [N, K]^T (+ b [N]),
   for a decode step on x86-64 CPUs (AVX-512 or AVX2 with FMA; see models/gemv.py for when it runs). The weight is
   float32, or int8 rows with one float32 scale each (y = scale[n] * (x @ q[n]) + b[n]: an int8 model's tied LM head
   on its token embedding's own int8 rows; x stays float32).

   A decode step multiplies 1 row (greedy), K rows (beams) or a few dozen (the engine) by each weight: the weight is
   streamed from memory once and the speed is how fast the kernel streams it. oneDNN's brgemm and MKL's sgemm read
   1024-wide weights at 18-28 GB/s on an AMD EPYC Zen 4 (2 cores), where the plain loop below reaches 30-43.

   How: each OpenMP thread takes one contiguous range of w's rows (outputs n). Within it, tiles of rows that fit the
   L2 cache; within a tile, RB weight rows at a time are multiplied with a group of 2 or 4 rows of x, one vector
   accumulator per (x row, weight row) pair, so each weight row is read once per group of x rows (from memory for the
   first group, from L2 for the next). Every output is a 16-lane (AVX-512) or 8-lane (AVX2) partial sum over k, then
   summed across lanes, then scaled (int8) and the bias added. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const float *x;
    const void *w;             /* float [N, K], or int8_t [N, K] when scale is set */
    const float *scale, *b;    /* [N] or NULL */
    float *y;
    long M, N, K;
    int prefetch;              /* 1: prefetch the next block of weight rows in software; 0: the hardware alone */
} Problem;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))
#define TILE_BYTES (256 * 1024)       /* a tile of weight rows, in L2 for the next group of x rows */

/* ---- loads: a vector of 16 (AVX-512) or 8 (AVX2) floats from p, zeros past `left` ------------------------------ */

AVX512 INLINE __m512 load16(const float *p, long left) {
    return left >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1), p);
}

AVX512 INLINE __m512 load16_q8(const int8_t *p, long left) {                 /* int8 values as floats */
    int8_t tail[16] = {0};
    if (left < 16) p = memcpy(tail, p, (size_t)left);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

AVX2 INLINE __m256 load8(const float *p, long left) {
    if (left >= 8) return _mm256_loadu_ps(p);
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), lane));
}

AVX2 INLINE __m256 load8_q8(const int8_t *p, long left) {
    int8_t tail[8] = {0};
    if (left < 8) p = memcpy(tail, p, (size_t)left);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

AVX2 INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* ---- NAME(x, MR, w, RB, K, out): out[m * RB + r] = sum_k x[m * K + k] * w[r * K + k] for MR rows of x and RB rows
   of w (constants once inlined, so the accumulators live in registers: MR * RB <= 24 of the 32 zmm, or 8 of the 16
   ymm) -------------------------------------------------------------------------------------------------------- */

#define DOTS(NAME, TARGET, WEIGHT, VEC, LANES, ZERO, LOAD_X, LOAD_W, FMA, SUM, HINT)                                \
    TARGET INLINE void NAME(const float *x, int MR, const WEIGHT *w, int RB, long K, int pf, float *out) {         \
        VEC acc[6][8], xv[6];                                                                                        \
        for (int m = 0; m < MR; m++)                                                                                 \
            for (int r = 0; r < RB; r++) acc[m][r] = ZERO();                                                         \
        long k = 0;                                                                                                  \
        const char *next = (const char *)(w + RB * K);      /* the next block of rows, fetched meanwhile */      \
        for (; k + LANES <= K; k += LANES) {                                                                         \
            for (long b = 0; pf && b < RB * LANES * (long)sizeof(WEIGHT); b += 64)                                   \
                _mm_prefetch(next + k * RB * (long)sizeof(WEIGHT) + b, HINT);                                        \
            DOTS_AT(LOAD_X, LOAD_W, FMA, LANES)                                     /* whole vectors */             \
        }                                                                                                            \
        if (k < K) DOTS_AT(LOAD_X, LOAD_W, FMA, K - k)                              /* the tail, zero-padded */     \
        for (int m = 0; m < MR; m++)                                                                                 \
            for (int r = 0; r < RB; r++) out[m * RB + r] = SUM(acc[m][r]);                                           \
    }

/* acc[m][r] += x[m][k:k+LANES] * w[r][k:k+LANES], `left` values from k on (a constant LANES in the main loop, so the
   loads' tail branch compiles away there) */
#define DOTS_AT(LOAD_X, LOAD_W, FMA, left)                                                                          \
    {                                                                                                                \
        for (int m = 0; m < MR; m++) xv[m] = LOAD_X(x + m * K + k, left);                                          \
        for (int r = 0; r < RB; r++) {                                                                               \
            __typeof__(xv[0]) wv = LOAD_W(w + r * K + k, left);                                                      \
            for (int m = 0; m < MR; m++) acc[m][r] = FMA(wv, xv[m], acc[m][r]);                                      \
        }                                                                                                            \
    }

/* The next block of rows is prefetched as this one is read: float32 blocks (8 rows of 4 KB for K = 1024) into L2,
   int8 ones (a quarter of that) into L1. Measured on an AMD EPYC Zen 4, 2 cores, a decode step's weights in turn
   (paired against no prefetch): float32 12% faster at one row, 8% at 4 and at 32 rows; int8 without it read at
   13 GB/s, with it at 29-38. Two or three blocks ahead, or into L1 for float32, measured no better. On an AMD EPYC
   Zen 3 (AVX2) float32 one row is 8-14% faster without it (the hardware prefetcher alone; 4 rows 15-20% slower,
   int8 35% slower): the caller says (`prefetch`; the kernel choice times both, "gemv" and "gemv-noprefetch"). */
DOTS(dots512, AVX512, float, __m512, 16, _mm512_setzero_ps, load16, load16, _mm512_fmadd_ps, _mm512_reduce_add_ps,
     _MM_HINT_T1)
DOTS(dots512_q8, AVX512, int8_t, __m512, 16, _mm512_setzero_ps, load16, load16_q8, _mm512_fmadd_ps,
     _mm512_reduce_add_ps, _MM_HINT_T0)
DOTS(dots256, AVX2, float, __m256, 8, _mm256_setzero_ps, load8, load8, _mm256_fmadd_ps, hsum8, _MM_HINT_T1)
DOTS(dots256_q8, AVX2, int8_t, __m256, 8, _mm256_setzero_ps, load8, load8_q8, _mm256_fmadd_ps, hsum8, _MM_HINT_T0)

/* ---- NAME(p, n0, n1): rows [n0, n1) of w against every row of x ------------------------------------------------ */

static void store(const Problem *p, const float *out, long m0, int MR, long n, int RB) {
    for (int m = 0; m < MR; m++)
        for (int r = 0; r < RB; r++)
            p->y[(m0 + m) * p->N + n + r] = out[m * RB + r] * (p->scale ? p->scale[n + r] : 1.0f)
                                            + (p->b ? p->b[n + r] : 0.0f);
}

/* One or two x rows go against RB1 / RB2 weight rows at a time; more in fours (fewer passes over the tile), against
   RBF weight rows up to 8 x rows; beyond 8, GM x rows at a time against RBM (a remainder of 3 rows against RBF). Each
   (MR, RB) is a constant of its own call, so each compiles its own loop. Measured on an AMD EPYC Zen 4 (a decode
   step's weights in turn, paired against pairs of x rows up to 8 rows): AVX2 4 rows 17% faster, 8 rows 15%; int8 4
   rows 16%, 8 rows 14%. More rows in fours against RBM 4: faster at 32 rows. AVX-512's RBF, each against the AVX2
   code in the same run (4, 6 and 8 rows): 3 as fast as AVX2's or 1-2% faster; 6 (24 of the 32 zmm accumulating)
   6-18% slower; 2 level with 3; 4 13% slower at 4 rows. AVX-512 beyond 8 rows, 6 x rows against RBM 4 (24 zmm
   accumulating, each weight vector used 6 times) against 4 x rows (copies of each decoder shape in turn, two runs):
   12 rows 4-19% faster, 32 rows level to 10% (the most for fc2's 1024x4096), 64 rows 0-11%; distilbart's beam step
   at batch 8, beam 4 (32 rows; processes alternating, 4 pairs) 66-70 ms against 69-77. 8 x 3, 6 x 3 and 8 x 2 were
   5-45% slower than fours. The sums are the same whatever RB and MR: each output's 16 lanes run over k alike. */
#define TILE(NAME, TARGET, WEIGHT, DOTS, RB1, RB2, RBF, RBM, GM)                                                      \
    TARGET INLINE void NAME##_rows(const Problem *p, long m0, int MR, long n0, long n1, int RB) {                   \
        float out[32];                                                                                               \
        const float *x = p->x + m0 * p->K;                                                                           \
        const WEIGHT *w = (const WEIGHT *)p->w;                                                                      \
        long n = n0;                                                                                                 \
        for (; n + RB <= n1; n += RB) {                                                                              \
            DOTS(x, MR, w + n * p->K, RB, p->K, p->prefetch, out);                                                   \
            store(p, out, m0, MR, n, RB);                                                                            \
        }                                                                                                            \
        for (; n < n1; n++) {                                                                                        \
            DOTS(x, MR, w + n * p->K, 1, p->K, p->prefetch, out);                                                    \
            store(p, out, m0, MR, n, 1);                                                                             \
        }                                                                                                            \
    }                                                                                                                \
    TARGET static void NAME(const Problem *p, long n0, long n1) {                                                    \
        int group = p->M <= 2 ? 2 : p->M <= 8 ? 4 : GM;                                                              \
        for (long m0 = 0; m0 < p->M; m0 += group) {                                                                  \
            switch (p->M - m0 >= group ? group : (int)(p->M - m0)) {                                                 \
            case 1: NAME##_rows(p, m0, 1, n0, n1, RB1); break;                                                       \
            case 2: NAME##_rows(p, m0, 2, n0, n1, RB2); break;                                                       \
            case 3: NAME##_rows(p, m0, 3, n0, n1, RBF); break;                                                       \
            case 4:                                                                                                  \
                if (p->M <= 8) NAME##_rows(p, m0, 4, n0, n1, RBF);                                                   \
                else NAME##_rows(p, m0, 4, n0, n1, RBM);                                                             \
                break;                                                                                               \
            case 5: NAME##_rows(p, m0, 5, n0, n1, RBM); break;                                                       \
            default: NAME##_rows(p, m0, 6, n0, n1, RBM);                                                             \
            }                                                                                                        \
        }                                                                                                            \
    }

TILE(tile512, AVX512, float, dots512, 8, 8, 3, 4, 6)
TILE(tile512_q8, AVX512, int8_t, dots512_q8, 8, 8, 4, 4, 4)
TILE(tile256, AVX2, float, dots256, 8, 4, 2, 2, 4)
TILE(tile256_q8, AVX2, int8_t, dots256_q8, 8, 4, 2, 2, 4)

/* 2: AVX-512, 1: AVX2 with FMA, 0: neither (the kernel does not run). Probed once, when the module loads. */
static int probe_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
}

static void run(const Problem *p, int threads, int level) {
    long bytes = p->scale ? 1 : 4;                              /* per weight */
    void (*tile_fn)(const Problem *, long, long) = level == 2 ? (p->scale ? tile512_q8 : tile512)
                                                              : (p->scale ? tile256_q8 : tile256);
    #pragma omp parallel num_threads(threads)
    {
        long T = omp_get_num_threads(), t = omp_get_thread_num();
        long share = ((p->N + T - 1) / T + 15) / 16 * 16;          /* whole cache lines of y per thread */
        long first = t * share, last = first + share < p->N ? first + share : p->N;
        long fit = p->K > 0 ? TILE_BYTES / (p->K * bytes) : 0;
        long tile = fit > 8 ? fit / 8 * 8 : 8;                      /* rows, K = 0 too */
        for (long n0 = first; n0 < last; n0 += tile)
            tile_fn(p, n0, n0 + tile < last ? n0 + tile : last);
    }
}

#else
static int probe_isa(void) { return 0; }
static void run(const Problem *p, int threads, int level) { (void)p; (void)threads; (void)level; }
#endif

static int ISA_LEVEL;                 /* probe_isa()'s answer */

/* linear(x, w, scale, b, y, M, N, K, threads, level, prefetch): addresses as ints (scale 0: w is float32, else int8
   rows with these float32 scales; b 0: no bias); x [M, K], w [N, K], y [M, N], contiguous, checked by the caller;
   level 2 runs the AVX-512 code, 1 the AVX2 code (at most ISA_LEVEL); prefetch 1 fetches the next block of weight
   rows in software, 0 leaves it to the hardware (the same sums either way). Runs without the GIL. */
static PyObject *linear(PyObject *self, PyObject *args) {
    unsigned long long x, w, scale, b, y;
    long M, N, K;
    int threads, level, prefetch;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKKKllliip", &x, &w, &scale, &b, &y, &M, &N, &K, &threads, &level, &prefetch))
        return NULL;
    if (level < 1 || level > ISA_LEVEL) {
        PyErr_Format(PyExc_ValueError, "gemv level %d cannot run on this CPU (it runs up to %d: 2 AVX-512, "
                     "1 AVX2 with FMA, 0 neither)", level, ISA_LEVEL);
        return NULL;
    }
    Problem p = {(const float *)(uintptr_t)x, (const void *)(uintptr_t)w, (const float *)(uintptr_t)scale,
                 (const float *)(uintptr_t)b, (float *)(uintptr_t)y, M, N, K, prefetch};
    Py_BEGIN_ALLOW_THREADS
    run(&p, threads > 0 ? threads : 1, level);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *supported(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyLong_FromLong(ISA_LEVEL);
}

static PyMethodDef methods[] = {
    {"linear", linear, METH_VARARGS,
     "linear(x, w, scale, b, y, M, N, K, threads, level, prefetch): y = x @ w^T (* scale) + b on addresses, w "
     "float32 (scale 0) or int8; AVX-512 (2) or AVX2 (1); the next weight rows prefetched in software or not"},
    {"isa", supported, METH_NOARGS, "2: AVX-512, 1: AVX2 with FMA, 0: the kernel cannot run on this CPU"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gemv", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__gemv(void) {
    ISA_LEVEL = probe_isa();
    return PyModule_Create(&module);
}
