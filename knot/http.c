/* http.c: the request-head parser.  A byte-at-a-time state machine that
 * resumes where the last call stopped; the fields it needs (method,
 * target, Connection, Host, Content-Length, Transfer-Encoding,
 * If-Modified-Since) are recorded as offsets into the caller's buffer,
 * so nothing is copied or allocated. */
#include "http.h"

#include <string.h>

enum {
	S_START, S_METHOD, S_TARGET0, S_TARGET, S_VERSION, S_LINE_LF,
	S_FIELD0, S_NAME, S_OWS, S_VALUE, S_FIELD_LF, S_END_LF, S_DONE, S_ERROR,
};

enum { F_CLOSE = 1, F_KEEPALIVE = 2, F_HOST = 4, F_CLEN = 8, F_TE = 16 };

/* RFC 9110 tchar */
static const uint8_t tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
	['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
	['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
	['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
	['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
	['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

void http_parser_init(struct http_parser *p)
{
	memset(p, 0, sizeof *p);
}

static int fail(struct http_parser *p, int status)
{
	p->state = S_ERROR;
	p->error = (int16_t)status;
	return -status;
}

static bool ieq(const char *a, size_t n, const char *lit)
{
	size_t m = strlen(lit);
	if (n != m)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c + 32);
		if (c != (unsigned char)lit[i])
			return false;
	}
	return true;
}

/* Connection: a comma-separated token list */
static void connection_tokens(struct http_parser *p, const char *v, size_t n)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
			i++;
		if (ieq(v + s, i - s, "close"))
			p->flags |= F_CLOSE;
		else if (ieq(v + s, i - s, "keep-alive"))
			p->flags |= F_KEEPALIVE;
	}
}

/* 0, or a status to fail with */
static int field(struct http_parser *p, const char *buf)
{
	const char *name = buf + p->name_off, *v = buf + p->value_off;
	size_t nlen = p->name_len, vlen = (size_t)(p->value_end - p->value_off);
	switch (nlen) {
	case 4:
		if (ieq(name, nlen, "host")) {
			if (p->flags & F_HOST)
				return 400;
			p->flags |= F_HOST;
		}
		break;
	case 10:
		if (ieq(name, nlen, "connection"))
			connection_tokens(p, v, vlen);
		break;
	case 14:
		if (ieq(name, nlen, "content-length")) {
			if (vlen == 0 || vlen > 15)
				return vlen > 15 ? 413 : 400;
			uint64_t x = 0;
			for (size_t i = 0; i < vlen; i++) {
				if (v[i] < '0' || v[i] > '9')
					return 400;
				x = x * 10 + (uint64_t)(v[i] - '0');
			}
			if ((p->flags & F_CLEN) && x != p->req.content_length)
				return 400;
			p->flags |= F_CLEN;
			p->req.content_length = x;
		}
		break;
	case 17:
		if (ieq(name, nlen, "transfer-encoding"))
			p->flags |= F_TE;
		else if (ieq(name, nlen, "if-modified-since"))
			p->req.has_ims = http_parse_date(v, vlen, &p->req.ims);
		break;
	}
	return 0;
}

static int finish(struct http_parser *p, const char *buf)
{
	struct http_request *r = &p->req;
	r->head_len = p->pos;
	const char *m = buf + r->method_off;
	if (r->method_len == 3 && memcmp(m, "GET", 3) == 0)
		r->method = HTTP_M_GET;
	else if (r->method_len == 4 && memcmp(m, "HEAD", 4) == 0)
		r->method = HTTP_M_HEAD;
	else
		r->method = HTTP_M_OTHER;
	if (p->flags & F_TE)
		return fail(p, r->minor ? 501 : 400);
	if (r->minor && !(p->flags & F_HOST))
		return fail(p, 400);
	if (p->flags & F_CLOSE)
		r->keep_alive = false;
	else
		r->keep_alive = r->minor ? true : (p->flags & F_KEEPALIVE) != 0;
	p->state = S_DONE;
	return 1;
}

/* "HTTP/d.d" between mark and pos: 0 or a status */
static int version(struct http_parser *p, const char *buf)
{
	const char *v = buf + p->mark;
	size_t n = p->pos - p->mark;
	if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' ||
	    v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
		return 400;
	if (v[5] != '1')
		return 505;
	p->req.minor = v[7] == '0' ? 0 : 1;
	return 0;
}

int http_parse(struct http_parser *p, const char *buf, size_t len)
{
	if (p->state == S_DONE)
		return 1;
	if (p->state == S_ERROR)
		return -p->error;
	while (p->pos < len) {
		if (p->pos >= HTTP_MAX_HEAD)
			return fail(p, p->state == S_TARGET ? 414 : 431);
		unsigned char c = (unsigned char)buf[p->pos];
		int e;
		switch (p->state) {
		case S_START: /* empty lines before a request are tolerated */
			if (c == '\r' || c == '\n')
				break;
			if (!tchar[c])
				return fail(p, 400);
			p->req.method_off = (uint16_t)p->pos;
			p->state = S_METHOD;
			break;
		case S_METHOD:
			if (c == ' ') {
				p->req.method_len = (uint16_t)(p->pos - p->req.method_off);
				p->state = S_TARGET0;
			} else if (!tchar[c] || p->pos - p->req.method_off >= HTTP_MAX_METHOD) {
				return fail(p, 400);
			}
			break;
		case S_TARGET0:
			if (c <= ' ' || c == 0x7f)
				return fail(p, 400);
			p->req.target_off = (uint16_t)p->pos;
			p->state = S_TARGET;
			break;
		case S_TARGET:
			if (c == ' ') {
				p->req.target_len = (uint16_t)(p->pos - p->req.target_off);
				p->mark = (uint16_t)(p->pos + 1);
				p->state = S_VERSION;
			} else if (c < ' ' || c == 0x7f) {
				return fail(p, 400);
			} else if (p->pos - p->req.target_off >= HTTP_MAX_TARGET) {
				return fail(p, 414);
			}
			break;
		case S_VERSION:
			if (c == '\r' || c == '\n') {
				if ((e = version(p, buf)))
					return fail(p, e);
				p->state = c == '\r' ? S_LINE_LF : S_FIELD0;
			} else if (p->pos - p->mark >= 8) {
				return fail(p, 400);
			}
			break;
		case S_LINE_LF:
		case S_FIELD_LF:
			if (c != '\n')
				return fail(p, 400);
			if (p->state == S_FIELD_LF && (e = field(p, buf)))
				return fail(p, e);
			p->state = S_FIELD0;
			break;
		case S_FIELD0:
			if (c == '\r') {
				p->state = S_END_LF;
			} else if (c == '\n') {
				p->pos++;
				return finish(p, buf);
			} else if (tchar[c]) {
				if (++p->fields > HTTP_MAX_FIELDS)
					return fail(p, 431);
				p->mark = (uint16_t)p->pos;
				p->state = S_NAME;
			} else {
				return fail(p, 400); /* obs-fold, stray bytes */
			}
			break;
		case S_NAME:
			if (c == ':') {
				p->name_off = p->mark;
				p->name_len = (uint16_t)(p->pos - p->mark);
				p->value_off = p->value_end = (uint16_t)(p->pos + 1);
				p->state = S_OWS;
			} else if (!tchar[c]) {
				return fail(p, 400);
			}
			break;
		case S_OWS:
		case S_VALUE:
			if (c == '\r' || c == '\n') {
				if (p->state == S_OWS)
					p->value_off = p->value_end = (uint16_t)p->pos;
				if (c == '\r') {
					p->state = S_FIELD_LF;
				} else {
					if ((e = field(p, buf)))
						return fail(p, e);
					p->state = S_FIELD0;
				}
			} else if (c == ' ' || c == '\t') {
				/* leading or inner whitespace; trailing is trimmed */
			} else if (c < ' ' || c == 0x7f) {
				return fail(p, 400);
			} else {
				if (p->state == S_OWS) {
					p->value_off = (uint16_t)p->pos;
					p->state = S_VALUE;
				}
				p->value_end = (uint16_t)(p->pos + 1);
			}
			break;
		case S_END_LF:
			if (c != '\n')
				return fail(p, 400);
			p->pos++;
			return finish(p, buf);
		}
		p->pos++;
	}
	if (p->pos >= HTTP_MAX_HEAD)
		return fail(p, p->state == S_TARGET ? 414 : 431);
	return 0;
}

/* ---- dates ---- */

static const char wdays[7][4] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };
static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * well-known civil-calendar arithmetic) */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static void put2(char *o, unsigned v)
{
	o[0] = (char)('0' + v / 10 % 10);
	o[1] = (char)('0' + v % 10);
}

void http_format_date(int64_t t, char out[30])
{
	int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
	int64_t secs = t - days * 86400;
	int64_t y;
	unsigned m, d;
	civil_from_days(days, &y, &m, &d);
	int wd = (int)(((days % 7) + 7) % 7);
	if (y < 0)
		y = 0;
	if (y > 9999)
		y = 9999;
	memcpy(out, wdays[wd], 3);
	out[3] = ',';
	out[4] = ' ';
	put2(out + 5, d);
	out[7] = ' ';
	memcpy(out + 8, months[m - 1], 3);
	out[11] = ' ';
	put2(out + 12, (unsigned)(y / 100));
	put2(out + 14, (unsigned)(y % 100));
	out[16] = ' ';
	put2(out + 17, (unsigned)(secs / 3600));
	out[19] = ':';
	put2(out + 20, (unsigned)(secs / 60 % 60));
	out[22] = ':';
	put2(out + 23, (unsigned)(secs % 60));
	memcpy(out + 25, " GMT", 5);
}

static bool num(const char *s, size_t n, unsigned *out)
{
	unsigned v = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*out = v;
	return true;
}

static int month(const char *s)
{
	for (int i = 0; i < 12; i++)
		if (memcmp(s, months[i], 3) == 0)
			return i + 1;
	return 0;
}

/* "HH:MM:SS" */
static bool hms(const char *s, unsigned *h, unsigned *mi, unsigned *sec)
{
	return s[2] == ':' && s[5] == ':' && num(s, 2, h) && num(s + 3, 2, mi) &&
	       num(s + 6, 2, sec) && *h < 24 && *mi < 60 && *sec <= 60;
}

bool http_parse_date(const char *s, size_t n, int64_t *out)
{
	unsigned d, y, h, mi, sec;
	int m;
	size_t i = 0;
	while (i < n && s[i] >= 'A' && s[i] <= 'z')
		i++; /* the day name */
	if (i < 3)
		return false;
	if (i < n && s[i] == ',') {
		s += i + 1;
		n -= i + 1;
		if (n == 25 && s[0] == ' ' && s[3] == ' ' && s[7] == ' ' && s[12] == ' ' &&
		    memcmp(s + 21, " GMT", 4) == 0) {
			/* " 06 Nov 1994 08:49:37 GMT" */
			if (!num(s + 1, 2, &d) || !(m = month(s + 4)) || !num(s + 8, 4, &y) ||
			    !hms(s + 13, &h, &mi, &sec))
				return false;
		} else if (n == 23 && s[0] == ' ' && s[3] == '-' && s[7] == '-' &&
		           s[10] == ' ' && memcmp(s + 19, " GMT", 4) == 0) {
			/* " 06-Nov-94 08:49:37 GMT" */
			if (!num(s + 1, 2, &d) || !(m = month(s + 4)) || !num(s + 8, 2, &y) ||
			    !hms(s + 11, &h, &mi, &sec))
				return false;
			y += y < 70 ? 2000 : 1900;
		} else {
			return false;
		}
	} else if (i == 3 && n == 24 && s[3] == ' ' && s[7] == ' ' && s[10] == ' ' &&
	           s[19] == ' ') {
		/* "Sun Nov  6 08:49:37 1994" */
		if (!(m = month(s + 4)) || !hms(s + 11, &h, &mi, &sec) || !num(s + 20, 4, &y))
			return false;
		if (!(s[8] == ' ' ? num(s + 9, 1, &d) : num(s + 8, 2, &d)))
			return false;
	} else {
		return false;
	}
	if (d < 1 || d > 31)
		return false;
	*out = days_from_civil(y, (unsigned)m, d) * 86400 + h * 3600 + mi * 60 + sec;
	return true;
}
