/*
 * umonitor_instrument.h - the formatting helpers that code rewritten by
 * `umonitor instrument` (docs/instrument.md) calls around UMON_ENTER and
 * UMON_EXIT.
 *
 * How this works: the rewriter declares, in a block of its own at a function's
 * entry and at each return, one fixed buffer per value
 * (char umon_i_v[N][UMON_I_VALUE]) and an array of struct umon_field whose
 * values are these helpers' results; each helper writes its value into the
 * buffer it is given and returns the buffer. Integers and enums are written in
 * decimal, floating values as %g, strings (char pointers) as their first
 * UMON_I_STRING_MAX bytes or "NULL", other pointers and the addresses of
 * structs and unions passed by value as %p. Values whose type the rewriter
 * cannot see (a typedef from another header) go through UMON_I_ANY, which picks
 * the helper from the value's type with C11 _Generic (GCC and clang also
 * before C11, as an __extension__).
 *
 * No helper allocates memory or includes a libc header under GCC or clang (the
 * rewritten file's own feature-test macros still come first where it matters:
 * this header goes on top of it); every buffer is bounded.
 */
#ifndef UMONITOR_INSTRUMENT_H
#define UMONITOR_INSTRUMENT_H

#include "umonitor.h"

/* Bytes of a string value kept (the rest is cut). */
#define UMON_I_STRING_MAX 64
/* Size of one value's buffer: the longest string, or number, and its NUL. */
#define UMON_I_VALUE (UMON_I_STRING_MAX + 1)

#if defined(__GNUC__) || defined(__clang__)
#define UMON_I_FN static __inline__ __attribute__((no_instrument_function, unused))
#define UMON_I_SNPRINTF __builtin_snprintf
#define UMON_I_MEMCPY __builtin_memcpy
#else
#include <stdio.h>
#include <string.h>
#define UMON_I_FN static
#define UMON_I_SNPRINTF snprintf
#define UMON_I_MEMCPY memcpy
#endif

UMON_I_FN const char *umon_i_int(char *buf, long long v)
{
    UMON_I_SNPRINTF(buf, UMON_I_VALUE, "%lld", v);
    return buf;
}

UMON_I_FN const char *umon_i_uint(char *buf, unsigned long long v)
{
    UMON_I_SNPRINTF(buf, UMON_I_VALUE, "%llu", v);
    return buf;
}

UMON_I_FN const char *umon_i_float(char *buf, double v)
{
    UMON_I_SNPRINTF(buf, UMON_I_VALUE, "%g", v);
    return buf;
}

/* The first UMON_I_STRING_MAX bytes of s (up to its NUL), or "NULL". */
UMON_I_FN const char *umon_i_str(char *buf, const char *s)
{
    unsigned i = 0;

    if (s == NULL)
        return "NULL";
    while (i < UMON_I_STRING_MAX && s[i] != '\0') {
        buf[i] = s[i];
        i++;
    }
    buf[i] = '\0';
    return buf;
}

UMON_I_FN const char *umon_i_ptr(char *buf, const void *p)
{
    UMON_I_SNPRINTF(buf, UMON_I_VALUE, "%p", p);
    return buf;
}

/* A function pointer stored at `at` (size bytes), as %p: its bytes are copied,
 * since ISO C has no conversion from a function pointer to void *. */
UMON_I_FN const char *umon_i_fn(char *buf, const void *at, size_t size)
{
    void *p = NULL;

    if (size == sizeof p)
        UMON_I_MEMCPY(&p, at, sizeof p);
    return umon_i_ptr(buf, p);
}

/*
 * UMON_I_ANY(buf, x) - x (an lvalue) formatted by its type, for types the
 * rewriter could not classify. Every branch takes the address of x so that
 * each is valid for any type; the one chosen reads x back as its own type.
 */
#define UMON_I_AT_(name, type, helper, cast)                                  \
    UMON_I_FN const char *umon_i_at_##name(char *buf, const void *at, size_t size, int cls) \
    {                                                                         \
        type v;                                                               \
        (void)size;                                                           \
        (void)cls;                                                            \
        UMON_I_MEMCPY(&v, at, sizeof v);                                      \
        return helper(buf, (cast)v);                                          \
    }
UMON_I_AT_(b, _Bool, umon_i_uint, unsigned long long)
UMON_I_AT_(c, char, umon_i_int, long long)
UMON_I_AT_(sc, signed char, umon_i_int, long long)
UMON_I_AT_(uc, unsigned char, umon_i_uint, unsigned long long)
UMON_I_AT_(s, short, umon_i_int, long long)
UMON_I_AT_(us, unsigned short, umon_i_uint, unsigned long long)
UMON_I_AT_(i, int, umon_i_int, long long)
UMON_I_AT_(u, unsigned, umon_i_uint, unsigned long long)
UMON_I_AT_(l, long, umon_i_int, long long)
UMON_I_AT_(ul, unsigned long, umon_i_uint, unsigned long long)
UMON_I_AT_(ll, long long, umon_i_int, long long)
UMON_I_AT_(ull, unsigned long long, umon_i_uint, unsigned long long)
UMON_I_AT_(f, float, umon_i_float, double)
UMON_I_AT_(d, double, umon_i_float, double)
UMON_I_AT_(ld, long double, umon_i_float, double)
UMON_I_AT_(cs, const char *, umon_i_str, const char *)
#undef UMON_I_AT_

/* Anything else: a pointer (GCC's type class 5) as its value, else the address
 * of the object (a struct or union passed by value). */
UMON_I_FN const char *umon_i_at_other(char *buf, const void *at, size_t size, int cls)
{
    if (cls == 5)
        return umon_i_fn(buf, at, size);
    return umon_i_ptr(buf, at);
}

#if defined(__GNUC__) || defined(__clang__)
#define UMON_I_CLASS_(x) __builtin_classify_type(x)
#else
#define UMON_I_CLASS_(x) 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define UMON_I_GENERIC_ __extension__ _Generic /* no -pedantic warning before C11 */
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define UMON_I_GENERIC_ _Generic
#endif

#ifdef UMON_I_GENERIC_
#define UMON_I_ANY(buf, x)                                                                  \
    UMON_I_GENERIC_((x),                                                                    \
        _Bool: umon_i_at_b, char: umon_i_at_c, signed char: umon_i_at_sc,                   \
        unsigned char: umon_i_at_uc, short: umon_i_at_s, unsigned short: umon_i_at_us,      \
        int: umon_i_at_i, unsigned: umon_i_at_u, long: umon_i_at_l,                         \
        unsigned long: umon_i_at_ul, long long: umon_i_at_ll,                               \
        unsigned long long: umon_i_at_ull, float: umon_i_at_f, double: umon_i_at_d,         \
        long double: umon_i_at_ld, char *: umon_i_at_cs, const char *: umon_i_at_cs,        \
        default: umon_i_at_other)((buf), (const void *)&(x), sizeof(x), UMON_I_CLASS_(x))
#else
#define UMON_I_ANY(buf, x) umon_i_ptr((buf), (const void *)&(x))
#endif

#endif /* UMONITOR_INSTRUMENT_H */
