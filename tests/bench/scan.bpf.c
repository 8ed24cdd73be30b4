// SPDX-License-Identifier: (LGPL-2.1-or-later OR BSD-2-Clause)
/*
 * scan.bpf.c - the comparison for `make bench`: a bind4 program that walks a
 * list of up to 128 allow rules one by one, the algorithm of systemd's
 * SocketBindAllow= (src/core/bpf/socket_bind/socket-bind.bpf.c).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SCAN_MAX_RULES 128

struct scan_rule {
	__u32 protocol;   /* 0: any */
	__u16 nr_ports;   /* 0: any port */
	__u16 port_min;
};

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SCAN_MAX_RULES);
	__type(key, __u32);
	__type(value, struct scan_rule);
} scan_rules SEC(".maps");

static __always_inline int match(const struct scan_rule *r, __u32 proto, __u16 port)
{
	if (r->protocol && r->protocol != proto)
		return 0;
	return !r->nr_ports || (port >= r->port_min && port - r->port_min < r->nr_ports);
}

SEC("cgroup/bind4")
int scan_bind4(struct bpf_sock_addr *ctx)
{
	__u16 port = bpf_ntohs(ctx->user_port);
	__u32 i;

	for (i = 0; i < SCAN_MAX_RULES; i++) {
		__u32 key = i;
		struct scan_rule *r = bpf_map_lookup_elem(&scan_rules, &key);

		if (!r)
			return 0;
		if (match(r, ctx->protocol, port))
			return 1;
	}
	return 0;
}
