// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * output.c - how portresctl prints data: -o text (tables, the default),
 * wide (more columns), json (as --json), jsonpath=TEMPLATE; --no-headers.
 *
 * The jsonpath subset (kubectl's syntax) runs over what --json prints:
 *
 *   text outside braces        printed as it is
 *   {.a.b}  {$.a}  {['a-b']}   a field; $ is the whole document
 *   {.a[0]} {.a[-1]}           an element of an array (negative: from the end)
 *   {.a[*].b}                  every element (values separated by spaces)
 *   {.a[?(@.k=="v")].b}        the elements whose field k is (==) or is not (!=)
 *                              a string or number
 *   {range .a[*]}...{end}      the text between, once per element; paths in it
 *                              start at the element ({.b}, {@} the element itself)
 *   {"\n"} {'\t'}              a string (\n \t \\ \" \' escapes)
 *
 * Strings print without quotes, numbers and booleans as JSON, null and missing
 * fields as nothing, objects and arrays as compact JSON. The output ends with
 * a newline when the template's does not.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

struct out {
	char *p;
	size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->len + n + 1 > o->cap) {
		size_t cap = (o->cap + n + 1) * 2;
		char *np = realloc(o->p, cap);

		if (!np)
			return;
		o->p = np;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void put_value(struct out *o, json_t *v)
{
	char num[64], *text;

	if (json_is_string(v)) {
		put(o, json_string_value(v), json_string_length(v));
	} else if (json_is_integer(v)) {
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		put(o, num, strlen(num));
	} else if (json_is_real(v)) {
		snprintf(num, sizeof(num), "%.17g", json_real_value(v));
		put(o, num, strlen(num));
	} else if (json_is_boolean(v)) {
		put(o, json_is_true(v) ? "true" : "false", json_is_true(v) ? 4 : 5);
	} else if (v && !json_is_null(v) && (text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY))) {
		put(o, text, strlen(text));
		free(text);
	}
}

/* --- paths ------------------------------------------------------------------ */

static int bad(char *err, size_t len, const char *what, const char *at)
{
	snprintf(err, len, "%s at \"%.20s\"", what, at);
	return -1;
}

/* A quoted string at *s ('"' or '\''): its value into buf; *s past the closing quote. */
static int quoted(const char **s, char *buf, size_t len, char *err, size_t elen)
{
	char q = **s;
	size_t n = 0;
	const char *p = *s + 1;

	for (; *p && *p != q; p++) {
		char c = *p;

		if (c == '\\' && p[1]) {
			c = *++p;
			c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
		}
		if (n + 1 < len)
			buf[n++] = c;
	}
	if (*p != q)
		return bad(err, elen, "unclosed string", *s);
	buf[n] = '\0';
	*s = p + 1;
	return 0;
}

static void add_node(json_t *set, json_t *v)
{
	if (v)
		json_array_append(set, v);
}

static bool equals(json_t *v, const char *lit, bool is_string)
{
	char num[64];

	if (is_string)
		return json_is_string(v) && !strcmp(json_string_value(v), lit);
	if (json_is_integer(v))
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_boolean(v))
		snprintf(num, sizeof(num), "%s", json_is_true(v) ? "true" : "false");
	else
		return false;
	return !strcmp(num, lit);
}

static json_t *eval(const char *path, json_t *ctx, json_t *root, char *err, size_t elen);

/* [?(@.k=="v")] at s (past "[?("): keeps the elements of nodes for which it holds. */
static int filter(const char **s, json_t *in, json_t *out, json_t *root, char *err, size_t elen)
{
	const char *p = *s, *op = strstr(p, "==") ? strstr(p, "==") : strstr(p, "!=");
	char sub[256], lit[256];
	bool is_string, want_eq;
	size_t i, k;
	json_t *n, *e;

	if (!op || p[0] != '@' || (size_t)(op - p) >= sizeof(sub))
		return bad(err, elen, "a filter is [?(@.field==value)]", p);
	memcpy(sub, p + 1, (size_t)(op - p - 1));
	sub[op - p - 1] = '\0';
	want_eq = op[0] == '=';
	p = op + 2;
	is_string = *p == '"' || *p == '\'';
	if (is_string) {
		if (quoted(&p, lit, sizeof(lit), err, elen))
			return -1;
	} else {
		size_t l = strcspn(p, ")");

		snprintf(lit, sizeof(lit), "%.*s", (int)(l < sizeof(lit) ? l : sizeof(lit) - 1), p);
		p += l;
	}
	if (strncmp(p, ")]", 2))
		return bad(err, elen, "a filter ends with )]", p);
	*s = p + 2;
	json_array_foreach(in, i, n) {
		json_t *elems = json_is_array(n) ? n : NULL;

		json_array_foreach(elems, k, e) {
			json_t *got = eval(sub[0] ? sub : ".", e, root, err, elen);
			bool hit;

			if (!got)
				return -1;
			hit = json_array_size(got) == 1 && equals(json_array_get(got, 0), lit, is_string);
			json_decref(got);
			if (hit == want_eq)
				add_node(out, e);
		}
	}
	return 0;
}

/* The nodes path selects: a new array (NULL with err on a syntax error). */
static json_t *eval(const char *path, json_t *ctx, json_t *root, char *err, size_t elen)
{
	json_t *set = json_array(), *next, *n, *v;
	const char *s = path;
	size_t i;

	while (isspace((unsigned char)*s))
		s++;
	if (*s == '$' || *s == '@') {
		add_node(set, *s == '$' ? root : ctx);
		s++;
	} else {
		add_node(set, ctx);
	}
	while (*s && !isspace((unsigned char)*s)) {
		next = json_array();
		if (s[0] == '.' && (s[1] == '\0' || isspace((unsigned char)s[1]))) {
			s++;
		} else if (*s == '.' || !strncmp(s, "['", 2) || !strncmp(s, "[\"", 2)) {
			char key[256];
			size_t l;

			if (*s == '.') {
				l = strcspn(s + 1, ".[ \t");
				if (!l || l >= sizeof(key))
					goto syntax;
				memcpy(key, s + 1, l);
				key[l] = '\0';
				s += 1 + l;
			} else {
				s++;
				if (quoted(&s, key, sizeof(key), err, elen))
					goto fail;
				if (*s++ != ']')
					goto syntax;
			}
			json_array_foreach(set, i, n) {
				if (!strcmp(key, "*") && json_is_object(n)) {
					const char *k;

					json_object_foreach(n, k, v)
						add_node(next, v);
				} else {
					add_node(next, json_object_get(n, key));
				}
			}
		} else if (!strncmp(s, "[*]", 3)) {
			s += 3;
			json_array_foreach(set, i, n) {
				size_t k;
				const char *key;

				if (json_is_array(n))
					json_array_foreach(n, k, v)
						add_node(next, v);
				else if (json_is_object(n))
					json_object_foreach(n, key, v)
						add_node(next, v);
			}
		} else if (!strncmp(s, "[?(", 3)) {
			s += 3;
			if (filter(&s, set, next, root, err, elen))
				goto fail;
		} else if (*s == '[') {
			char *end;
			long idx = strtol(s + 1, &end, 10);

			if (end == s + 1 || *end != ']')
				goto syntax;
			s = end + 1;
			json_array_foreach(set, i, n) {
				long size = (long)json_array_size(n);

				if (json_is_array(n) && idx < size && idx >= -size)
					add_node(next, json_array_get(n, (size_t)(idx < 0 ? size + idx : idx)));
			}
		} else {
			goto syntax;
		}
		json_decref(set);
		set = next;
	}
	return set;
syntax:
	bad(err, elen, "not a path", s);
fail:
	json_decref(next);
	json_decref(set);
	return NULL;
}

/* --- templates -------------------------------------------------------------- */

/* The end of the {...} opening at s ('{'), or NULL. */
static const char *close_brace(const char *s)
{
	for (const char *p = s + 1; *p; p++) {
		if (*p == '"' || *p == '\'') {
			char q = *p;

			for (p++; *p && *p != q; p++)
				if (*p == '\\' && p[1])
					p++;
			if (!*p)
				return NULL;
		} else if (*p == '}') {
			return p;
		}
	}
	return NULL;
}

static bool is_word(const char *expr, size_t n, const char *word)
{
	size_t w = strlen(word);

	return n >= w && !strncmp(expr, word, w) && (n == w || isspace((unsigned char)expr[w]));
}

/*
 * Renders t[0..len) with ctx into o (o NULL: only checks). Returns 0, or -1
 * with err. *stop, when non-NULL, gets where an {end} closing a range is.
 */
static int render(const char *t, const char *limit, json_t *ctx, json_t *root, struct out *o, const char **stop,
		  char *err, size_t elen)
{
	const char *s = t;

	while (s < limit) {
		const char *open = memchr(s, '{', (size_t)(limit - s)), *close, *expr;
		size_t n;

		if (!open) {
			if (o)
				put(o, s, (size_t)(limit - s));
			break;
		}
		if (o)
			put(o, s, (size_t)(open - s));
		if (!(close = close_brace(open)) || close >= limit)
			return bad(err, elen, "unclosed {", open);
		for (expr = open + 1; isspace((unsigned char)*expr); expr++)
			;
		n = (size_t)(close - expr);
		while (n && isspace((unsigned char)expr[n - 1]))
			n--;
		if (is_word(expr, n, "end")) {
			if (!stop)
				return bad(err, elen, "{end} without {range}", open);
			*stop = open;
			return 0;
		}
		if (*expr == '"' || *expr == '\'') {
			char lit[1024];
			const char *q = expr;

			if (quoted(&q, lit, sizeof(lit), err, elen))
				return -1;
			if (o)
				put(o, lit, strlen(lit));
		} else {
			bool range = is_word(expr, n, "range");
			char path[1024];
			json_t *nodes, *node;
			const char *body = close + 1, *end = NULL;
			size_t i;

			if (range) {
				expr += 5;
				n -= 5;
			}
			snprintf(path, sizeof(path), "%.*s", (int)n, expr);
			if (!(nodes = eval(path, ctx, root, err, elen)))
				return -1;
			if (!range) {
				json_array_foreach(nodes, i, node) {
					if (o && i)
						put(o, " ", 1);
					if (o)
						put_value(o, node);
				}
				json_decref(nodes);
				s = close + 1;
				continue;
			}
			/* the body once to find its {end}, then once per node */
			if (render(body, limit, ctx, root, NULL, &end, err, elen) || !end) {
				json_decref(nodes);
				return end ? -1 : bad(err, elen, "{range} without {end}", open);
			}
			json_array_foreach(nodes, i, node) {
				if (o && render(body, end, node, root, o, NULL, err, elen)) {
					json_decref(nodes);
					return -1;
				}
			}
			json_decref(nodes);
			s = close_brace(end) + 1;
			continue;
		}
		s = close + 1;
	}
	return 0;
}

/* --- options ------------------------------------------------------------------ */

int ctl_set_output(const char *spec)
{
	char err[256];

	ctl.jsonpath = NULL;
	ctl.wide = false;
	if (!strcmp(spec, "json")) {
		ctl.json = true;
	} else if (!strcmp(spec, "text")) {
		ctl.json = false;
	} else if (!strcmp(spec, "wide")) {
		ctl.json = false;
		ctl.wide = true;
	} else if (!strncmp(spec, "jsonpath=", 9)) {
		ctl.json = true;
		ctl.jsonpath = spec + 9;
		if (render(ctl.jsonpath, ctl.jsonpath + strlen(ctl.jsonpath), NULL, NULL, NULL, NULL, err, sizeof(err)))
			return ctl_bad_usage("-o jsonpath: %s", err);
	} else {
		return ctl_bad_usage("-o: \"%s\" is not text, wide, json or jsonpath=TEMPLATE", spec);
	}
	return 0;
}

void ctl_print_json(json_t *obj, bool compact)
{
	struct out o = { 0 };
	char err[256];

	if (!ctl.jsonpath) {
		json_dumpf(obj, stdout, compact ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
		return;
	}
	if (render(ctl.jsonpath, ctl.jsonpath + strlen(ctl.jsonpath), obj, obj, &o, NULL, err, sizeof(err)))
		fprintf(stderr, "portresctl: -o jsonpath: %s\n", err);
	if (o.len)
		fputs(o.p, stdout);
	if (!o.len || o.p[o.len - 1] != '\n')
		fputc('\n', stdout);
	free(o.p);
}

/* --- tables ------------------------------------------------------------------- */

struct ctl_table {
	size_t ncols, nrows;
	char **cells;        /* nrows * ncols, row 0 the header */
	const char *indent;
};

struct ctl_table *ctl_table_new(const char *indent, size_t ncols, const char *const *headers)
{
	struct ctl_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->ncols = ncols;
	t->indent = indent;
	ctl_table_row(t, headers);
	return t;
}

void ctl_table_row(struct ctl_table *t, const char *const *cells)
{
	char **grown;

	if (!t || !(grown = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(*grown))))
		return;
	t->cells = grown;
	for (size_t c = 0; c < t->ncols; c++)
		grown[t->nrows * t->ncols + c] = strdup(cells[c] && *cells[c] ? cells[c] : "-");
	t->nrows++;
}

/* Columns as wide as their widest cell, two spaces apart; the last one not padded. */
void ctl_table_print(struct ctl_table *t)
{
	size_t *w;

	if (!t || !(w = calloc(t->ncols, sizeof(*w))))
		return;
	for (size_t r = ctl.no_headers ? 1 : 0; r < t->nrows; r++)
		for (size_t c = 0; c < t->ncols; c++)
			if (t->cells[r * t->ncols + c] && strlen(t->cells[r * t->ncols + c]) > w[c])
				w[c] = strlen(t->cells[r * t->ncols + c]);
	for (size_t r = ctl.no_headers ? 1 : 0; r < t->nrows; r++) {
		fputs(t->indent, stdout);
		for (size_t c = 0; c < t->ncols; c++) {
			const char *cell = t->cells[r * t->ncols + c] ?: "";

			if (c + 1 < t->ncols)
				printf("%-*s  ", (int)w[c], cell);
			else
				printf("%s\n", cell);
		}
	}
	free(w);
}

void ctl_table_free(struct ctl_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}
