/* seq2seq_kit.models._attention: a decode step's attention on the CPU, y = softmax(scale * q @ k^T, masked) @ v for
   a few query rows per (input, head) against that input's cached keys and values (models/attention.py says when it
   runs). A decode step reads every cached key and value once per head: the cross-attention's, S source positions per
   layer, and the self-attention's, the tokens so far. torch's scaled_dot_product_attention (its flash kernel) took
   1.0 ms for distilbart's six cross-attentions over a 512-position source with one query, this code 0.6 (AMD EPYC
   Zen 4, 2 cores; cached keys and values: 0.25 against 0.026 ms a call).

   How: each OpenMP thread takes whole (input, head) pairs. For each query row: the scores against every key, 8 keys
   at a time (a dot product over the head's width each, their 8 lane sums in one vector), the masked ones -inf; their
   maximum; exp(score - maximum) and their sum; then the values weighted by those and divided by the sum. AVX2 with
   FMA (8 lanes; the head's width a multiple of 8); exp is a polynomial (Cephes' expf: relative error ~1e-7), so the
   result differs from torch's in the last bits only (tests/test_attention.py). A query whose keys are all masked
   gets NaN, as in torch. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>

typedef struct {
    const float *q, *k, *v;       /* q [B, H, Q, D], k and v [B, H, S, D]: strides below, the last dimension dense */
    const uint8_t *mask;          /* bool [B, S], dense along S (mb apart; 0: one mask for every input), or NULL */
    float *y;                     /* [B, H, Q, D], dense */
    float *scratch;               /* S floats per thread */
    long B, H, Q, S, D;
    long qb, qh, qi, kb, kh, ks, vb, vh, vs, mb;
    float scale;
} Problem;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

AVX2 INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

AVX2 INLINE float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

/* the 8 lane sums of a[0..7], in order: [sum(a[0]), ..., sum(a[7])] */
AVX2 INLINE __m256 hsums8(const __m256 a[8]) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    t0 = _mm256_hadd_ps(t0, t1);
    t2 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t2, 0x20), _mm256_permute2f128_ps(t0, t2, 0x31));
}

/* e^x for x <= 0 (x = score - maximum), as Cephes' expf: e^x = 2^n * e^r, |r| <= ln(2) / 2, e^r by a polynomial */
AVX2 INLINE __m256 exp8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)),
                               _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));
}

/* q . k over D (a multiple of 8) as one 8-lane vector of partial sums */
AVX2 INLINE __m256 dot8(const float *q, const float *k, long D) {
    __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(k));
    for (long d = 8; d < D; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), acc);
    return acc;
}

/* the scores of keys [j, j + 8) (masked: -inf) */
AVX2 INLINE __m256 scores8(const Problem *p, const float *q, const float *k, const uint8_t *mask, long j, long D) {
    __m256 a[8];
    for (int t = 0; t < 8; t++) a[t] = dot8(q, k + (j + t) * p->ks, D);
    __m256 s = _mm256_mul_ps(hsums8(a), _mm256_set1_ps(p->scale));
    if (!mask) return s;
    __m256i keep = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(mask + j)));
    __m256 off = _mm256_castsi256_ps(_mm256_cmpeq_epi32(keep, _mm256_setzero_si256()));
    return _mm256_blendv_ps(s, _mm256_set1_ps(-INFINITY), off);
}

/* One (input b, head h): every query row against the S keys and values; s: S floats of scratch. D is a constant
   where the caller passes one (64: the head width of every BART-family checkpoint but KoBART's 48), so the loops over
   it unroll and the output stays in registers. */
AVX2 INLINE void attend_head(const Problem *p, long b, long h, float *s, long D) {
    const float *k = p->k + b * p->kb + h * p->kh, *v = p->v + b * p->vb + h * p->vh;
    const uint8_t *mask = p->mask ? p->mask + b * p->mb : NULL;
    long S = p->S, whole = S / 8 * 8;
    for (long i = 0; i < p->Q; i++) {
        const float *q = p->q + b * p->qb + h * p->qh + i * p->qi;
        __m256 top8 = _mm256_set1_ps(-INFINITY);
        for (long j = 0; j < whole; j += 8) {                               /* scores, 8 keys at a time */
            __m256 sc = scores8(p, q, k, mask, j, D);
            _mm256_storeu_ps(s + j, sc);
            top8 = _mm256_max_ps(top8, sc);
        }
        float top = hmax8(top8);
        for (long j = whole; j < S; j++) {                                  /* the last S % 8 keys */
            s[j] = mask && !mask[j] ? -INFINITY : hsum8(dot8(q, k + j * p->ks, D)) * p->scale;
            top = s[j] > top ? s[j] : top;
        }
        __m256 total8 = _mm256_setzero_ps(), top_v = _mm256_set1_ps(top), minus_inf = _mm256_set1_ps(-INFINITY);
        for (long j = 0; j < whole; j += 8) {                               /* weights e^(score - top), masked 0 */
            __m256 sc = _mm256_loadu_ps(s + j);
            __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(sc, minus_inf, _CMP_EQ_OQ), exp8(_mm256_sub_ps(sc, top_v)));
            _mm256_storeu_ps(s + j, e);
            total8 = _mm256_add_ps(total8, e);
        }
        float total = hsum8(total8);
        for (long j = whole; j < S; j++) {
            __m256 e = exp8(_mm256_set1_ps(s[j] - top));
            s[j] = s[j] == -INFINITY ? 0.0f : _mm256_cvtss_f32(e);
            total += s[j];
        }
        float *y = p->y + ((b * p->H + h) * p->Q + i) * D;
        __m256 acc[8];                                                      /* D <= 64: the output in registers */
        for (long d0 = 0; d0 < D; d0 += 64) {
            long width = D - d0 < 64 ? D - d0 : 64;
            for (long d = 0; d < width; d += 8) acc[d / 8] = _mm256_setzero_ps();
            for (long j = 0; j < S; j++) {                                  /* sum of weight * value */
                __m256 w = _mm256_set1_ps(s[j]);
                for (long d = 0; d < width; d += 8)
                    acc[d / 8] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + j * p->vs + d0 + d), acc[d / 8]);
            }
            __m256 total_v = _mm256_set1_ps(total);
            for (long d = 0; d < width; d += 8) _mm256_storeu_ps(y + d0 + d, _mm256_div_ps(acc[d / 8], total_v));
        }
    }
}

AVX2 static void attend_pair(const Problem *p, long bh, float *s) {
    if (p->D == 64) attend_head(p, bh / p->H, bh % p->H, s, 64);
    else attend_head(p, bh / p->H, bh % p->H, s, p->D);
}

static int probe_isa(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#else
static int probe_isa(void) { return 0; }
static void attend_pair(const Problem *p, long bh, float *s) { (void)p; (void)bh; (void)s; }
#endif

static int ISA;              /* probe_isa()'s answer */

static void run(const Problem *p, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        float *s = p->scratch + omp_get_thread_num() * p->S;
        #pragma omp for schedule(static)
        for (long bh = 0; bh < p->B * p->H; bh++) attend_pair(p, bh, s);
    }
}

/* attend(q, k, v, mask, y, scratch, B, H, Q, S, D, strides (10), scale, threads): addresses as ints (mask 0: none;
   scratch: threads * S floats); the caller checks shapes, dtypes and strides. Runs without the GIL. */
static PyObject *attend(PyObject *self, PyObject *args) {
    unsigned long long q, k, v, mask, y, scratch;
    Problem p;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKKKKlllllllllllllllfi", &q, &k, &v, &mask, &y, &scratch,
                          &p.B, &p.H, &p.Q, &p.S, &p.D, &p.qb, &p.qh, &p.qi, &p.kb, &p.kh, &p.ks,
                          &p.vb, &p.vh, &p.vs, &p.mb, &p.scale, &threads))
        return NULL;
    p.q = (const float *)(uintptr_t)q;
    p.k = (const float *)(uintptr_t)k;
    p.v = (const float *)(uintptr_t)v;
    p.mask = (const uint8_t *)(uintptr_t)mask;
    p.y = (float *)(uintptr_t)y;
    p.scratch = (float *)(uintptr_t)scratch;
    Py_BEGIN_ALLOW_THREADS
    run(&p, threads > 0 ? threads : 1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *supported(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(ISA);
}

static PyMethodDef methods[] = {
    {"isa", supported, METH_NOARGS, "whether the kernel can run on this CPU (x86-64 with AVX2 and FMA)"},
    {"attend", attend, METH_VARARGS,
     "attend(q, k, v, mask, y, scratch, B, H, Q, S, D, qb, qh, qi, kb, kh, ks, vb, vh, vs, mb, scale, threads): "
     "y = softmax(scale * q @ k^T, mask) @ v on addresses"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_attention", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__attention(void) {
    ISA = probe_isa();
    return PyModule_Create(&module);
}
