/*
 * deny-type: a Troupe sidecar plugin in C (ABI v1, docs/plugins.md).
 *
 * Rejects commands whose type is the configured deny_type (config value,
 * default "Close") and logs each rejection through the host's log import.
 * It decodes just the protobuf fields it needs by hand: no libraries beyond
 * wasi-libc's malloc.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("troupe"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("log") void troupe_log(int32_t level, const char *ptr, uint32_t len);
IMPORT("config_get") int32_t troupe_config_get(const char *key, uint32_t key_len, char *out, uint32_t out_cap);

EXPORT("abi_version") int32_t abi_version(void) { return 1; }

EXPORT("alloc") void *guest_alloc(uint32_t size) { return malloc(size ? size : 1); }

EXPORT("dealloc") void guest_dealloc(void *ptr, uint32_t size) { (void)size; free(ptr); }

/* A view into the request buffer. */
typedef struct {
	const uint8_t *p;
	uint32_t n;
} bytes;

/* varint reads a base-128 varint; returns 0 on malformed input. */
static int varint(bytes *b, uint64_t *v) {
	*v = 0;
	for (int shift = 0; shift < 64 && b->n > 0; shift += 7) {
		uint8_t c = *b->p++;
		b->n--;
		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) return 1;
	}
	return 0;
}

/* field finds field num (length-delimited) in message m; 1 when found. */
static int field(bytes m, uint32_t num, bytes *out) {
	while (m.n > 0) {
		uint64_t tag, len;
		if (!varint(&m, &tag)) return 0;
		switch (tag & 7) {
		case 0: /* varint */
			if (!varint(&m, &len)) return 0;
			break;
		case 1: /* 64-bit */
			if (m.n < 8) return 0;
			m.p += 8, m.n -= 8;
			break;
		case 5: /* 32-bit */
			if (m.n < 4) return 0;
			m.p += 4, m.n -= 4;
			break;
		case 2: /* length-delimited */
			if (!varint(&m, &len) || len > m.n) return 0;
			if ((tag >> 3) == num) {
				out->p = m.p, out->n = (uint32_t)len;
				return 1;
			}
			m.p += len, m.n -= (uint32_t)len;
			break;
		default:
			return 0;
		}
	}
	return 0;
}

static char deny_type[128] = "Close";
static int configured;
static uint8_t verdict[512];

static uint32_t put_varint(uint8_t *p, uint32_t v) {
	uint32_t n = 0;
	while (v >= 0x80) p[n++] = (uint8_t)(v | 0x80), v >>= 7;
	p[n++] = (uint8_t)v;
	return n;
}

EXPORT("handle") uint64_t handle(const uint8_t *ptr, uint32_t len) {
	if (!configured) {
		configured = 1;
		int32_t n = troupe_config_get("deny_type", 9, deny_type, sizeof deny_type - 1);
		if (n >= 0 && n < (int32_t)sizeof deny_type) deny_type[n] = 0;
	}
	bytes req = {ptr, len}, cmd, typ;
	/* PluginRequest.command = 10, Command.type = 4. Anything else: allow. */
	if (!field(req, 10, &cmd) || !field(cmd, 4, &typ)) return 0;
	if (typ.n != strlen(deny_type) || memcmp(typ.p, deny_type, typ.n) != 0) return 0;

	static const char msg[] = "deny-type: rejected a command of type ";
	char line[sizeof msg + 128];
	uint32_t tn = typ.n < 128 ? typ.n : 128;
	memcpy(line, msg, sizeof msg - 1);
	memcpy(line + sizeof msg - 1, typ.p, tn);
	troupe_log(1, line, (uint32_t)(sizeof msg - 1 + tn));

	/* Verdict{reject: true (field 1), reason (field 2)}. */
	static const char why[] = "commands of type ";
	static const char tail[] = " are not accepted here";
	uint32_t rn = (uint32_t)(sizeof why - 1 + tn + sizeof tail - 1), n = 0;
	verdict[n++] = 0x08, verdict[n++] = 0x01, verdict[n++] = 0x12;
	n += put_varint(verdict + n, rn);
	memcpy(verdict + n, why, sizeof why - 1), n += sizeof why - 1;
	memcpy(verdict + n, typ.p, tn), n += tn;
	memcpy(verdict + n, tail, sizeof tail - 1), n += sizeof tail - 1;
	return ((uint64_t)(uintptr_t)verdict << 32) | n;
}
