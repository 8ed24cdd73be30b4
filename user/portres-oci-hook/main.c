// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * portres-oci-hook - port reservations for OCI containers (runc, crun; and
 * Podman and CRI-O through hooks.d), from the container's annotations:
 *
 *   io.portres.reserve   "tcp:15000-15010,udp:5353"  blocks made in the
 *                        container's network namespace (one per protocol)
 *   io.portres.name      "web"   an existing block (a host-netns one, for a
 *                        host-network container) the container is tied to
 *   io.portres.confine   "true" (the protocols with a block) | "all" | "false"
 *
 * The runtime runs it with the container's state on stdin (runtime-spec
 * config.md#posix-platform-hooks: id, pid, bundle, annotations, status):
 *
 *   createRuntime (or prestart; status "creating")  the blocks are created in
 *       /proc/PID/ns/net, named oci-<id>.tcp / oci-<id>.udp so poststop finds
 *       them without state of its own, and the container's cgroup (from
 *       /proc/PID/cgroup) is tied to them. A block that exists there already
 *       with the same ports (made by another container of the pod: CRI-O
 *       gives every container the pod's annotations) is joined instead. A
 *       bad annotation or a refused block fails the start: a message naming
 *       the annotation and the cause on stderr, exit 1, nothing left behind.
 *   poststop (status "stopped")  the blocks it made are deleted, unless a
 *       cgroup that still exists (another container of the pod) is tied to
 *       them; they end by themselves when the network namespace goes.
 *
 * The stage is the first argument, or else read from the state's status.
 * The agent's socket: $PORTRES_SOCKET, else /run/portres/portresd.sock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "portres.h"
#include "proto.h"
#include "state.h"
#include "transport.h"

#define ANN_RESERVE "io.portres.reserve"
#define ANN_NAME    "io.portres.name"
#define ANN_CONFINE "io.portres.confine"
#define STATE_MAX   (1 << 20)

struct block {
	uint8_t proto;          /* 0: none */
	uint16_t start, count;
	char name[STATE_NAME_MAX + 1];
	char token[17];         /* a block of the netns joined (another container of the pod made it) */
	bool made;              /* created by this run: undone on a failure */
};

struct hook {
	const char *id;
	long pid;
	const char *bundle;
	json_t *ann;
	struct block blocks[2]; /* TCP, UDP */
	const char *existing;   /* io.portres.name */
	const char *confine;    /* "false", "true" or "all" */
	char base[STATE_NAME_MAX + 1];
	char cgroup[PATH_MAX];
	const char *socket;
	int agent;
	bool attached[3];       /* blocks[0], blocks[1], existing */
};

static int say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int say(const char *fmt, ...)
{
	va_list ap;

	fputs("portres-oci-hook: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* --- the state and the annotations ---------------------------------------- */

static json_t *read_state(void)
{
	char *buf = malloc(STATE_MAX + 1);
	size_t n = 0;
	ssize_t r;
	json_t *st;

	if (!buf)
		return NULL;
	while (n < STATE_MAX && (r = read(STDIN_FILENO, buf + n, STATE_MAX - n)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		n += (size_t)r;
	}
	st = json_loadb(buf, n, 0, NULL);
	free(buf);
	return json_is_object(st) ? st : (json_decref(st), NULL);
}

static const char *annotation(const struct hook *h, const char *key)
{
	return json_string_value(json_object_get(h->ann, key));
}

/*
 * The name blocks get: "oci-<id>" when the id is a valid name short enough
 * for ".tcp", else a valid prefix of it and a hash of all of it.
 */
static void base_name(const char *id, char *out, size_t len)
{
	char tmp[STATE_NAME_MAX + 16];
	uint64_t h = 14695981039346656037ULL;
	size_t n = 0;

	snprintf(tmp, sizeof(tmp), "oci-%s", id);
	if (strlen(tmp) + 4 <= STATE_NAME_MAX && state_name_valid(tmp)) {
		snprintf(out, len, "%s", tmp);
		return;
	}
	for (const unsigned char *c = (const unsigned char *)id; *c; c++)
		h = (h ^ *c) * 1099511628211ULL;
	/* FNV-1a of the whole id keeps distinct ids apart */
	n = (size_t)snprintf(out, len, "oci-");
	for (const char *c = id; *c && n < 38; c++)
		out[n++] = (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *c)) ? *c : '_';
	snprintf(out + n, len - n, "-%016" PRIx64, h);
}

/* The name of the container's block of proto: base_name leaves room for ".tcp". */
static void block_name(const struct hook *h, uint8_t proto, char name[STATE_NAME_MAX + 1])
{
	if (snprintf(name, STATE_NAME_MAX + 1, "%s.%s", h->base, state_proto_name(proto)) > STATE_NAME_MAX)
		name[0] = '\0';
}

/* "tcp:15000-15010,udp:5353" */
static int parse_reserve(struct hook *h, const char *v)
{
	char *copy = strdup(v), *save = NULL, *item;
	int ret = 0;

	if (!copy)
		return say("out of memory");
	for (item = strtok_r(copy, ",", &save); item && !ret; item = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(item, ':'), *end;
		unsigned long a, b;
		struct block *bl;
		int proto;

		while (*item == ' ')
			item++;
		if (!colon) {
			ret = say("annotation %s=\"%s\": \"%s\" is not PROTO:PORT or PROTO:FIRST-LAST", ANN_RESERVE, v, item);
			break;
		}
		*colon = '\0';
		if ((proto = state_proto_parse(item)) < 0) {
			ret = say("annotation %s=\"%s\": \"%s\" is not tcp or udp", ANN_RESERVE, v, item);
			break;
		}
		errno = 0;
		a = strtoul(colon + 1, &end, 10);
		b = a;
		if (*end == '-')
			b = strtoul(end + 1, &end, 10);
		if (errno || *end || colon[1] < '1' || colon[1] > '9' || a < 1 || b > 65535 || b < a) {
			ret = say("annotation %s=\"%s\": \"%s\" is not a port or FIRST-LAST within 1-65535", ANN_RESERVE,
				  v, colon + 1);
			break;
		}
		bl = &h->blocks[proto == IPPROTO_TCP ? 0 : 1];
		if (bl->proto) {
			ret = say("annotation %s=\"%s\": two %s blocks (a container holds one per protocol)", ANN_RESERVE,
				  v, item);
			break;
		}
		bl->proto = (uint8_t)proto;
		bl->start = (uint16_t)a;
		bl->count = (uint16_t)(b - a + 1);
		block_name(h, (uint8_t)proto, bl->name);
	}
	free(copy);
	return ret;
}

static int parse_annotations(struct hook *h)
{
	const char *reserve = annotation(h, ANN_RESERVE);

	h->existing = annotation(h, ANN_NAME);
	h->confine = annotation(h, ANN_CONFINE);
	if (reserve && parse_reserve(h, reserve))
		return 1;
	if (h->existing && !state_name_valid(h->existing))
		return say("annotation %s=\"%s\": not a reservation name (1-%d of A-Z a-z 0-9 . _ -)", ANN_NAME,
			   h->existing, STATE_NAME_MAX);
	if (h->confine && strcmp(h->confine, "true") && strcmp(h->confine, "false") && strcmp(h->confine, "all"))
		return say("annotation %s=\"%s\": true, false or all", ANN_CONFINE, h->confine);
	if (h->confine && strcmp(h->confine, "false") && !reserve && !h->existing)
		return say("annotation %s=\"%s\": needs %s or %s (nothing to confine the container to)", ANN_CONFINE,
			   h->confine, ANN_RESERVE, ANN_NAME);
	return 0;
}

/* --- the agent ------------------------------------------------------------ */

/* One request (taken): 0, or 1 after a message "<what>: <the agent's reason>"; *code gets the errno name. */
static int call(struct hook *h, json_t *req, int passfd, json_t **reply, const char *what, char *code, size_t len)
{
	json_t *r = NULL;
	int err;

	if (code)
		code[0] = '\0';
	if (reply)
		*reply = NULL;
	if (h->agent < 0 && (h->agent = portres_transport_connect(h->socket)) < 0) {
		err = h->agent;
		json_decref(req);
		if (err == -ECONNREFUSED)
			return say("%s: no portres agent at %s (start portresd, or run the container without io.portres.* "
				   "annotations)", what, h->socket);
		return say("%s: the portres agent at %s: %s", what, h->socket, strerror(-err));
	}
	err = portres_transport_call(h->agent, req, passfd, PORTRES_TRANSPORT_TIMEOUT_MS, &r);
	json_decref(req);
	if (err)
		return say("%s: the portres agent at %s: %s", what, h->socket, strerror(-err));
	if (!portres_transport_error(r)) {
		if (reply)
			*reply = r;
		else
			json_decref(r);
		return 0;
	}
	if (code)
		snprintf(code, len, "%s", json_string_value(json_object_get(r, "errno")) ?: "");
	/* ENOENT is for the caller to judge (poststop: already gone) */
	if (!code || strcmp(code, "ENOENT"))
		say("%s: %s", what, json_string_value(json_object_get(r, "error")) ?: "refused");
	json_decref(r);
	return 1;
}

/* --- createRuntime -------------------------------------------------------- */

/* The container's cgroup2 directory, from /proc/PID/cgroup ("0::/path"). */
static int container_cgroup(struct hook *h)
{
	char path[64], line[PATH_MAX + 8];
	const char *root = cgroup2_mount();
	FILE *f;
	int ret = 1;

	snprintf(path, sizeof(path), "/proc/%ld/cgroup", h->pid);
	if (!root)
		return say("no cgroup2 mount: portres ties containers to blocks by their cgroup2 directory");
	if (!(f = fopen(path, "re")))
		return say("container %s: %s: %s", h->id, path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = '\0';
			if (snprintf(h->cgroup, sizeof(h->cgroup), "%s%s", root, strcmp(line + 3, "/") ? line + 3 : "") <
			    (int)sizeof(h->cgroup))
				ret = 0;
			break;
		}
	fclose(f);
	return ret ? say("container %s: no cgroup2 entry in %s", h->id, path) : 0;
}

/* The selector of slot's block: "token" (joined) or "name", into *key and *sel. */
static void slot_sel(const struct hook *h, int slot, const char **key, const char **sel)
{
	*key = slot < 2 && h->blocks[slot].token[0] ? "token" : "name";
	*sel = slot == 2 ? h->existing : h->blocks[slot].token[0] ? h->blocks[slot].token : h->blocks[slot].name;
}

static void undo(struct hook *h)
{
	for (int i = 2; i >= 0; i--) {
		const char *key, *sel;

		if (!h->attached[i])
			continue;
		slot_sel(h, i, &key, &sel);
		call(h, json_pack("{s:s, s:s, s:s}", "op", "detach", "cgroup", h->cgroup, key, sel), -1, NULL,
		     "undoing the attach", NULL, 0);
	}
	for (int i = 1; i >= 0; i--)
		if (h->blocks[i].made)
			call(h, json_pack("{s:s, s:s, s:b}", "op", "delete", "name", h->blocks[i].name, "force", 1), -1, NULL,
			     "undoing the block", NULL, 0);
}

/* Ties the container's cgroup to the block of slot (0 TCP, 1 UDP, 2 io.portres.name). */
static int attach(struct hook *h, int slot, const char *ann)
{
	const char *key, *name;
	json_t *req;
	char what[PATH_MAX + 128];

	slot_sel(h, slot, &key, &name);
	req = json_pack("{s:s, s:s, s:s}", "op", "attach", "cgroup", h->cgroup, key, name);
	if (!h->confine || !strcmp(h->confine, "false"))
		json_object_set_new(req, "confine", json_false());
	else
		json_object_set_new(req, "confine", !strcmp(h->confine, "all") ? json_string("all") : json_true());
	snprintf(what, sizeof(what), "annotation %s: tying cgroup %s to %s", ann, h->cgroup, name);
	if (call(h, req, -1, NULL, what, NULL, 0))
		return 1;
	h->attached[slot] = true;
	return 0;
}

/*
 * Where the agent may find the container's netns again: the path config.json
 * gives it (a pod's netns file), else /proc/PID/ns/net (opened either way).
 */
static void netns_hint(const struct hook *h, char *out, size_t len)
{
	char file[PATH_MAX];
	json_t *cfg, *ns;
	size_t i;

	snprintf(out, len, "/proc/%ld/ns/net", h->pid);
	if (!h->bundle || (size_t)snprintf(file, sizeof(file), "%s/config.json", h->bundle) >= sizeof(file) ||
	    !(cfg = json_load_file(file, 0, NULL)))
		return;
	json_array_foreach(json_object_get(json_object_get(cfg, "linux"), "namespaces"), i, ns) {
		const char *type = json_string_value(json_object_get(ns, "type"));
		const char *path = json_string_value(json_object_get(ns, "path"));

		if (type && !strcmp(type, "network") && path && path[0] == '/' && strlen(path) < len)
			snprintf(out, len, "%s", path);
	}
	json_decref(cfg);
}

static int create_runtime(struct hook *h)
{
	char path[64], hint[PATH_MAX], what[256];
	int nsfd, ret = 1;

	if (!h->blocks[0].proto && !h->blocks[1].proto && !h->existing)
		return 0; /* nothing asked of portres */
	if (h->pid <= 0)
		return say("container %s: the state has no pid", h->id);
	if (container_cgroup(h))
		return 1;
	snprintf(path, sizeof(path), "/proc/%ld/ns/net", h->pid);
	if ((nsfd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return say("container %s: %s: %s", h->id, path, strerror(errno));
	netns_hint(h, hint, sizeof(hint));
	for (int i = 0; i < 2; i++) {
		struct block *b = &h->blocks[i];
		json_t *req;

		json_t *reply;
		char code[32];

		if (!b->proto)
			continue;
		snprintf(what, sizeof(what), "annotation %s: %s %u-%u", ANN_RESERVE, state_proto_name(b->proto),
			 b->start, b->start + b->count - 1);
		/* the pod's block, made by another of its containers: joined */
		req = json_pack("{s:s, s:s, s:i, s:i}", "op", "lookup", "proto", state_proto_name(b->proto), "start",
				b->start, "count", b->count);
		if (!call(h, req, nsfd, &reply, what, code, sizeof(code))) {
			snprintf(b->token, sizeof(b->token), "%s", json_string_value(json_object_get(reply, "token")) ?: "");
			json_decref(reply);
		} else if (strcmp(code, "ENOENT")) {
			goto out;
		}
		if (!b->token[0]) {
			req = json_pack("{s:s, s:s, s:i, s:i, s:s, s:s}", "op", "create", "proto",
					state_proto_name(b->proto), "start", b->start, "count", b->count, "name", b->name,
					"netns", hint);
			if (call(h, req, nsfd, NULL, what, NULL, 0))
				goto out;
			b->made = true;
		}
		if (attach(h, i, ANN_RESERVE))
			goto out;
	}
	if (h->existing && attach(h, 2, ANN_NAME))
		goto out;
	ret = 0;
out:
	if (ret)
		undo(h);
	close(nsfd);
	return ret;
}

/* --- poststop ------------------------------------------------------------- */

/* Whether a cgroup that still exists is tied to the reservation r (a show reply's). */
static bool in_use(const json_t *r)
{
	json_t *x;
	size_t i;

	json_array_foreach(json_object_get(r, "attachments"), i, x) {
		const char *path = json_string_value(json_object_get(x, "path"));

		if (path && path[0] == '/' && !access(path, F_OK))
			return true;
	}
	return false;
}

static int poststop(struct hook *h)
{
	char code[32], what[128];
	int ret = 0;

	for (int i = 0; i < 2; i++) {
		json_t *reply;

		block_name(h, i ? IPPROTO_UDP : IPPROTO_TCP, h->blocks[i].name);
		snprintf(what, sizeof(what), "deleting %s", h->blocks[i].name);
		/* gone already (the network namespace ended first, or there was none): fine */
		if (call(h, json_pack("{s:s, s:s}", "op", "show", "name", h->blocks[i].name), -1, &reply, what, code,
			 sizeof(code))) {
			if (strcmp(code, "ENOENT"))
				ret = 1;
			if (h->agent < 0)
				break;
			continue;
		}
		/* still used by another container of the pod: it ends with the pod's netns
		 * (our own cgroup is gone by now; the agent may not have dropped it yet: force) */
		if (in_use(json_object_get(reply, "reservation"))) {
			json_decref(reply);
			continue;
		}
		json_decref(reply);
		if (call(h, json_pack("{s:s, s:s, s:b}", "op", "delete", "name", h->blocks[i].name, "force", 1), -1, NULL, what, code,
			 sizeof(code)) &&
		    strcmp(code, "ENOENT"))
			ret = 1;
	}
	/* an io.portres.name attachment goes with the container's cgroup (the agent sees it removed) */
	return ret;
}

int main(int argc, char **argv)
{
	struct hook h = { .agent = -1 };
	const char *stage = argc > 1 ? argv[1] : NULL, *status;
	json_t *st;
	int ret;

	if (argc > 2 || (stage && (!strcmp(stage, "-h") || !strcmp(stage, "--help")))) {
		fprintf(argc > 2 ? stderr : stdout,
			"usage: portres-oci-hook [createRuntime|prestart|poststop] < state.json\n"
			"An OCI runtime hook: reads the container state on stdin and acts on its annotations\n"
			"  %s  \"tcp:FIRST-LAST,udp:PORT\"  blocks in the container's network namespace\n"
			"  %s     NAME                       an existing block to tie the container to\n"
			"  %s  true|all|false             confine its binds to its blocks\n",
			ANN_RESERVE, ANN_NAME, ANN_CONFINE);
		return argc > 2 ? 2 : 0;
	}
	h.socket = portres_transport_path(NULL);
	if (!(st = read_state()))
		return say("no container state (JSON) on stdin");
	h.id = json_string_value(json_object_get(st, "id"));
	h.pid = (long)json_integer_value(json_object_get(st, "pid"));
	h.bundle = json_string_value(json_object_get(st, "bundle"));
	h.ann = json_object_get(st, "annotations");
	status = json_string_value(json_object_get(st, "status"));
	if (!h.id || !h.id[0]) {
		json_decref(st);
		return say("the container state has no id");
	}
	if (!stage)
		stage = status && !strcmp(status, "stopped") ? "poststop" : "createRuntime";
	base_name(h.id, h.base, sizeof(h.base));
	if (!strcmp(stage, "poststop"))
		ret = poststop(&h);
	else if (!strcmp(stage, "createRuntime") || !strcmp(stage, "prestart"))
		ret = parse_annotations(&h) || create_runtime(&h);
	else
		ret = say("stage %s: this hook runs at createRuntime (or prestart) and poststop", stage);
	if (h.agent >= 0)
		close(h.agent);
	json_decref(st);
	return ret;
}
