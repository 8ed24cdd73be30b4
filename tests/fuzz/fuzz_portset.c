// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * fuzz_portset.c - libFuzzer target for the ip_local_reserved_ports text
 * (user/common/sysctl_ports.c): whatever portset_parse accepts formats to a
 * text that parses back to the same set, of the length portset_format_len says.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sysctl_ports.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct portset s, back;
	char *text = malloc(size + 1), *out;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (portset_parse(text, &s) == 0) {
		out = portset_format(&s);
		if (!out || strlen(out) != portset_format_len(&s) || portset_parse(out, &back) ||
		    memcmp(&s, &back, sizeof(s)))
			abort();
		free(out);
	}
	free(text);
	return 0;
}
