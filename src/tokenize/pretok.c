// Pre-tokenizers of byte-level BPE vocabularies: hand-written matchers that
// split text exactly as these regular expressions do (leftmost alternative
// first, greedy quantifiers with backtracking, one match after another):
//
//   GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2:  as Llama 3 with \p{N} (one digit per piece) instead of \p{N}{1,3}
//   SmolLM: every \p{N} is a piece of its own (HF "Digits" with individual
//           digits), and the GPT-2 expression splits the text between them.
//
// Every code point is a letter, a number, White_Space or other, so the
// matches tile the text. Each match is decided from the class of its first
// character (and, for " ?X", the second), which is what lets these run in one
// pass. What backtracking does to the whitespace rules:
//   \s+(?!\S)   a whitespace run that reaches the end matches whole; a longer
//               run matches all but its last character (which then starts
//               the next piece, e.g. " " + "word"); a single one fails.
//   \s*[\r\n]+  matches up to and including the last \r or \n of the run.
// (?i) folds 's' with U+017F LATIN SMALL LETTER LONG S as Unicode simple case
// folding does; no other character folds to t, m, d, r, v or l.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "unicode_tables.h"

int tok_cp_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return TOK_CP_LETTER;
        if (cp >= '0' && cp <= '9') return TOK_CP_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return TOK_CP_SPACE;
        return TOK_CP_OTHER;
    }
    size_t lo = 0, hi = tok_cp_n_ranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < tok_cp_ranges[mid].first) hi = mid;
        else if (cp > tok_cp_ranges[mid].last) lo = mid + 1;
        else return tok_cp_ranges[mid].cls;
    }
    return TOK_CP_OTHER;
}

// Decodes the code point at s[i] (valid UTF-8, i < n); *len gets its length.
static uint32_t cp_at(const char *str, size_t i, size_t *len) {
    const unsigned char *s = (const unsigned char *)str + i;
    if (s[0] < 0x80) { *len = 1; return s[0]; }
    if (s[0] < 0xE0) { *len = 2; return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F); }
    if (s[0] < 0xF0) {
        *len = 3;
        return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
           (s[3] & 0x3F);
}

// Class of the character at i, or -1 at the end.
static int class_at(const char *s, size_t i, size_t end) {
    size_t l;
    return i < end ? tok_cp_class(cp_at(s, i, &l)) : -1;
}

// End of the run of class k starting at i, at most max characters.
static size_t run_of(const char *s, size_t i, size_t end, int k, size_t max) {
    size_t l, count = 0;
    while (i < end && count < max && tok_cp_class(cp_at(s, i, &l)) == k) i += l, count++;
    return i;
}

static size_t crlf_run(const char *s, size_t i, size_t end) {
    while (i < end && (s[i] == '\r' || s[i] == '\n')) i++;
    return i;
}

static int is_s(const char *s, size_t i, size_t end, int fold, size_t *len) {
    if (i >= end) return 0;
    *len = 1;
    if (s[i] == 's' || (fold && s[i] == 'S')) return 1;
    if (fold && end - i >= 2 && (unsigned char)s[i] == 0xC5 && (unsigned char)s[i + 1] == 0xBF) {
        *len = 2;  // U+017F
        return 1;
    }
    return 0;
}

static int ch_eq(char c, char want, int fold) { return c == want || (fold && c == want - 'a' + 'A'); }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0.
static size_t contraction(const char *s, size_t i, size_t end, int fold) {
    if (s[i] != '\'' || end - i < 2) return 0;
    char c = s[i + 1];
    size_t l;
    if (is_s(s, i + 1, end, fold, &l)) return 1 + l;
    if (ch_eq(c, 't', fold) || ch_eq(c, 'm', fold) || ch_eq(c, 'd', fold)) return 2;
    if (end - i >= 3) {
        char d = s[i + 2];
        if ((ch_eq(c, 'r', fold) || ch_eq(c, 'v', fold)) && ch_eq(d, 'e', fold)) return 3;
        if (ch_eq(c, 'l', fold) && ch_eq(d, 'l', fold)) return 3;
    }
    return 0;
}

// The whitespace rules after the others failed at i (a White_Space char).
// crlf: whether \s*[\r\n]+ is an alternative.
static size_t space_rules(const char *s, size_t i, size_t end, int crlf) {
    size_t j = i, last = i, l, nl_end = 0, count = 0;
    while (j < end && tok_cp_class(cp_at(s, j, &l)) == TOK_CP_SPACE) {
        if (s[j] == '\r' || s[j] == '\n') nl_end = j + 1;
        last = j;
        j += l;
        count++;
    }
    if (crlf && nl_end) return nl_end;    // \s*[\r\n]+
    if (j == end) return j;               // \s+(?!\S) at the end
    if (count >= 2) return last;          // \s+(?!\S) leaving one
    return j;                             // \s+
}

static size_t next_gpt2(const char *s, size_t i, size_t end) {
    size_t c = contraction(s, i, end, 0);
    if (c) return i + c;
    int k = class_at(s, i, end);
    if (s[i] == ' ') {
        int k1 = class_at(s, i + 1, end);
        if (k1 == TOK_CP_LETTER || k1 == TOK_CP_NUMBER || k1 == TOK_CP_OTHER) return run_of(s, i + 1, end, k1, SIZE_MAX);
    }
    if (k != TOK_CP_SPACE) return run_of(s, i, end, k, SIZE_MAX);
    return space_rules(s, i, end, 0);
}

static size_t next_llama3(const char *s, size_t i, size_t end, size_t max_digits) {
    size_t c = contraction(s, i, end, 1);
    if (c) return i + c;
    size_t l0;
    cp_at(s, i, &l0);
    int k = class_at(s, i, end);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (k == TOK_CP_LETTER) return run_of(s, i, end, TOK_CP_LETTER, SIZE_MAX);
    if (k != TOK_CP_NUMBER && s[i] != '\r' && s[i] != '\n' && class_at(s, i + l0, end) == TOK_CP_LETTER)
        return run_of(s, i + l0, end, TOK_CP_LETTER, SIZE_MAX);
    if (k == TOK_CP_NUMBER) return run_of(s, i, end, TOK_CP_NUMBER, max_digits);
    // ' '?[^\s\p{L}\p{N}]+[\r\n]*
    if (s[i] == ' ' && class_at(s, i + 1, end) == TOK_CP_OTHER)
        return crlf_run(s, run_of(s, i + 1, end, TOK_CP_OTHER, SIZE_MAX), end);
    if (k == TOK_CP_OTHER) return crlf_run(s, run_of(s, i, end, TOK_CP_OTHER, SIZE_MAX), end);
    return space_rules(s, i, end, 1);
}

el_pretok el_pretok_from_name(const char *name, size_t len) {
    static const struct {
        const char *name;
        el_pretok pre;
    } names[] = {
        {"gpt-2", EL_PRETOK_GPT2},      {"default", EL_PRETOK_GPT2}, {"gpt2", EL_PRETOK_GPT2},
        {"llama-bpe", EL_PRETOK_LLAMA3}, {"llama3", EL_PRETOK_LLAMA3}, {"qwen2", EL_PRETOK_QWEN2},
        {"smollm", EL_PRETOK_SMOLLM},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) == len && memcmp(names[i].name, name, len) == 0) return names[i].pre;
    }
    return EL_PRETOK_NONE;
}

const char *el_pretok_name(el_pretok pre) {
    switch (pre) {
    case EL_PRETOK_GPT2: return "gpt-2";
    case EL_PRETOK_LLAMA3: return "llama-bpe";
    case EL_PRETOK_QWEN2: return "qwen2";
    case EL_PRETOK_SMOLLM: return "smollm";
    default: return "none";
    }
}

size_t tok_pretok_next(tok_pretok_iter *it) {
    const char *s = it->s;
    size_t i = it->i;
    if (i >= it->n) return it->n;
    size_t end = it->n, r;
    switch (it->pre) {
    case EL_PRETOK_LLAMA3: r = next_llama3(s, i, end, 3); break;
    case EL_PRETOK_QWEN2: r = next_llama3(s, i, end, 1); break;
    case EL_PRETOK_SMOLLM: {
        size_t l;
        if (tok_cp_class(cp_at(s, i, &l)) == TOK_CP_NUMBER) {
            r = i + l;
            break;
        }
        if (it->seg_end <= i) {  // the text up to the next number is split on its own
            size_t j = i;
            while (j < end && tok_cp_class(cp_at(s, j, &l)) != TOK_CP_NUMBER) j += l;
            it->seg_end = j;
        }
        r = next_gpt2(s, i, it->seg_end);
        break;
    }
    default: r = next_gpt2(s, i, end); break;
    }
    it->i = r;
    return r;
}

el_status el_pretok_split(el_pretok pre, const char *text, size_t len, size_t **ends, size_t *n_pieces,
                          el_error *err) {
    if (ends) *ends = NULL;
    if (n_pieces) *n_pieces = 0;
    if (!ends || !n_pieces || (!text && len)) return el_err(err, EL_ERR_ARG, "pretok: NULL argument");
    if (pre < EL_PRETOK_GPT2 || pre > EL_PRETOK_SMOLLM)
        return el_err(err, EL_ERR_ARG, "pretok: unknown pre-tokenizer %d", (int)pre);
    size_t bad = el_utf8_check(text, len);
    if (bad < len) return el_err(err, EL_ERR_ARG, "text is not valid UTF-8 at byte %zu", bad);
    size_t cap = 16, n = 0;
    size_t *v = malloc(cap * sizeof *v);
    if (!v) return el_err(err, EL_ERR_NOMEM, "pretok: out of memory");
    tok_pretok_iter it = {pre, text, len, 0, 0};
    while (it.i < len) {
        size_t e = tok_pretok_next(&it);
        if (n == cap) {
            size_t *nv = realloc(v, 2 * cap * sizeof *nv);
            if (!nv) {
                free(v);
                return el_err(err, EL_ERR_NOMEM, "pretok: out of memory");
            }
            v = nv;
            cap *= 2;
        }
        v[n++] = e;
    }
    *ends = v;
    *n_pieces = n;
    return EL_OK;
}
