/* seq2seq_kit.models._gemv: a float32 product of a few rows by a weight, y [M, N] = x [M, K] @ w [N, K]^T (+ b [N]),
   for a decode step on x86-64 CPUs (AVX-512 or AVX2 with FMA; see models/gemv.py for when it runs).

   A decode step multiplies 1 row (greedy), K rows (beams) or a few dozen (the engine) by each weight: the weight is
   streamed from memory once and the speed is how fast the kernel streams it. oneDNN's brgemm and MKL's sgemm read
   1024-wide weights at 18-28 GB/s on an AMD EPYC Zen 4 (2 cores), where the plain loop below reaches 30-43.

   How: each OpenMP thread takes one contiguous range of w's rows (outputs n). Within it, tiles of rows that fit the
   L2 cache; within a tile, RB weight rows at a time are multiplied with a group of 2 or 4 rows of x, one vector
   accumulator per (x row, weight row) pair, so each weight row is read once per group of x rows (from memory for the
   first group, from L2 for the next). Every output is a 16-lane (AVX-512) or 8-lane (AVX2) partial sum over k, then
   summed across lanes, then the bias added. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <omp.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))
#define TILE_FLOATS (64 * 1024)       /* a tile of weight rows: 256 KB, in L2 for the next group of x rows */

/* ---- AVX-512: acc[m][r] += x[m][k:k+16] * w[r][k:k+16] -------------------------------------------------------- */

AVX512 INLINE __m512 load16(const float *p, long left) {           /* up to 16 floats, zeros past `left` */
    return left >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1), p);
}

/* out[m * RB + r] = sum_k x[m * K + k] * w[r * K + k] for MR rows of x and RB rows of w (both constants once inlined,
   so the accumulators live in registers: MR * RB <= 16 of the 32 zmm). */
AVX512 INLINE void dots512(const float *x, int MR, const float *w, int RB, long K, float *out) {
    __m512 acc[4][8];
    for (int m = 0; m < MR; m++)
        for (int r = 0; r < RB; r++) acc[m][r] = _mm512_setzero_ps();
    for (long k = 0; k < K; k += 16) {
        __m512 xv[4];
        for (int m = 0; m < MR; m++) xv[m] = load16(x + m * K + k, K - k);
        for (int r = 0; r < RB; r++) {
            __m512 wv = load16(w + r * K + k, K - k);
            for (int m = 0; m < MR; m++) acc[m][r] = _mm512_fmadd_ps(wv, xv[m], acc[m][r]);
        }
    }
    for (int m = 0; m < MR; m++)
        for (int r = 0; r < RB; r++) out[m * RB + r] = _mm512_reduce_add_ps(acc[m][r]);
}

/* ---- AVX2 + FMA: the same with 8 lanes and 16 ymm registers (MR * RB <= 8) -------------------------------------- */

AVX2 INLINE __m256 load8(const float *p, long left) {
    if (left >= 8) return _mm256_loadu_ps(p);
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), lane));
}

AVX2 INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

AVX2 INLINE void dots256(const float *x, int MR, const float *w, int RB, long K, float *out) {
    __m256 acc[4][8];
    for (int m = 0; m < MR; m++)
        for (int r = 0; r < RB; r++) acc[m][r] = _mm256_setzero_ps();
    for (long k = 0; k < K; k += 8) {
        __m256 xv[4];
        for (int m = 0; m < MR; m++) xv[m] = load8(x + m * K + k, K - k);
        for (int r = 0; r < RB; r++) {
            __m256 wv = load8(w + r * K + k, K - k);
            for (int m = 0; m < MR; m++) acc[m][r] = _mm256_fmadd_ps(wv, xv[m], acc[m][r]);
        }
    }
    for (int m = 0; m < MR; m++)
        for (int r = 0; r < RB; r++) out[m * RB + r] = hsum8(acc[m][r]);
}

/* ---- one tile: rows [n0, n1) of w against MR rows of x, RB weight rows at a time -------------------------------- */

typedef struct {
    const float *x, *w, *b;
    float *y;
    long M, N, K;
} Problem;

static void store(const Problem *p, const float *out, long m0, int MR, long n, int RB) {
    for (int m = 0; m < MR; m++)
        for (int r = 0; r < RB; r++)
            p->y[(m0 + m) * p->N + n + r] = out[m * RB + r] + (p->b ? p->b[n + r] : 0.0f);
}

#define TILE(NAME, TARGET, DOTS)                                                                                     \
    TARGET INLINE void NAME##_rows(const Problem *p, long m0, int MR, long n0, long n1, int RB) {                   \
        float out[32];                                                                                               \
        const float *x = p->x + m0 * p->K;                                                                           \
        long n = n0;                                                                                                 \
        for (; n + RB <= n1; n += RB) {                                                                              \
            DOTS(x, MR, p->w + n * p->K, RB, p->K, out);                                                             \
            store(p, out, m0, MR, n, RB);                                                                            \
        }                                                                                                            \
        for (; n < n1; n++) {                                                                                        \
            DOTS(x, MR, p->w + n * p->K, 1, p->K, out);                                                              \
            store(p, out, m0, MR, n, 1);                                                                             \
        }                                                                                                            \
    }

TILE(avx512, AVX512, dots512)
TILE(avx2, AVX2, dots256)

/* Each group of x rows with a block of weight rows the registers hold (constants, so each case compiles its own loop).
   Up to 8 x rows go in pairs against 8 weight rows at a time (more weight rows streamed at once: measured faster at
   4 rows on an AMD EPYC Zen 4), more rows in fours against 4 (fewer passes over the tile: faster at 32 rows). */
static inline int group_of(long M) { return M <= 8 ? 2 : 4; }

AVX512 static void tile512(const Problem *p, long n0, long n1) {
    int group = group_of(p->M);
    for (long m0 = 0; m0 < p->M; m0 += group) {
        switch (p->M - m0 >= group ? group : (int)(p->M - m0)) {
        case 1: avx512_rows(p, m0, 1, n0, n1, 8); break;
        case 2: avx512_rows(p, m0, 2, n0, n1, 8); break;
        case 3: avx512_rows(p, m0, 3, n0, n1, 4); break;
        default: avx512_rows(p, m0, 4, n0, n1, 4); break;
        }
    }
}

AVX2 static void tile256(const Problem *p, long n0, long n1) {
    int group = group_of(p->M);
    for (long m0 = 0; m0 < p->M; m0 += group) {
        switch (p->M - m0 >= group ? group : (int)(p->M - m0)) {
        case 1: avx2_rows(p, m0, 1, n0, n1, 8); break;
        case 2: avx2_rows(p, m0, 2, n0, n1, 4); break;
        case 3: avx2_rows(p, m0, 3, n0, n1, 2); break;
        default: avx2_rows(p, m0, 4, n0, n1, 2); break;
        }
    }
}

/* 2: AVX-512, 1: AVX2 with FMA, 0: neither (the kernel does not run). Probed once, when the module loads. */
static int probe_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
}

static void run(const Problem *p, int threads, int level) {
    #pragma omp parallel num_threads(threads)
    {
        long T = omp_get_num_threads(), t = omp_get_thread_num();
        long share = ((p->N + T - 1) / T + 15) / 16 * 16;          /* whole cache lines of y per thread */
        long first = t * share, last = first + share < p->N ? first + share : p->N;
        long tile = p->K > 0 && TILE_FLOATS / p->K > 8 ? TILE_FLOATS / p->K / 8 * 8 : 8;   /* rows, K = 0 too */
        for (long n0 = first; n0 < last; n0 += tile) {
            long n1 = n0 + tile < last ? n0 + tile : last;
            if (level == 2) tile512(p, n0, n1); else tile256(p, n0, n1);
        }
    }
}

#else
static int probe_isa(void) { return 0; }
typedef struct { const float *x, *w, *b; float *y; long M, N, K; } Problem;
static void run(const Problem *p, int threads, int level) { (void)p; (void)threads; (void)level; }
#endif

static int ISA_LEVEL;                 /* probe_isa()'s answer */

/* linear(x, w, b, y, M, N, K, threads, level): addresses as ints (b 0: no bias); x [M, K], w [N, K], y [M, N],
   float32, contiguous, checked by the caller; level 2 runs the AVX-512 code, 1 the AVX2 code (at most ISA_LEVEL).
   Runs without the GIL. */
static PyObject *linear(PyObject *self, PyObject *args) {
    unsigned long long x, w, b, y;
    long M, N, K;
    int threads, level;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKKlllii", &x, &w, &b, &y, &M, &N, &K, &threads, &level)) return NULL;
    if (level < 1 || level > ISA_LEVEL) {
        PyErr_Format(PyExc_ValueError, "gemv level %d cannot run on this CPU (it runs up to %d: 2 AVX-512, "
                     "1 AVX2 with FMA, 0 neither)", level, ISA_LEVEL);
        return NULL;
    }
    Problem p = {(const float *)(uintptr_t)x, (const float *)(uintptr_t)w, (const float *)(uintptr_t)b,
                 (float *)(uintptr_t)y, M, N, K};
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
     "linear(x, w, b, y, M, N, K, threads, level): y = x @ w^T + b on float32 addresses, AVX-512 (2) or AVX2 (1)"},
    {"isa", supported, METH_NOARGS, "2: AVX-512, 1: AVX2 with FMA, 0: the kernel cannot run on this CPU"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gemv", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__gemv(void) {
    ISA_LEVEL = probe_isa();
    return PyModule_Create(&module);
}
