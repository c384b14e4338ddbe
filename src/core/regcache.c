#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/regcache.h"

typedef struct fabnet_regcache_entry entry_t;

/* ---- AVL tree keyed by (start ascending, end descending, seq ascending) ----
 * Keys are unique (seq is), so a node is found again by its key. Starts never
 * decrease in key order, which both searches below rely on; among equal
 * starts the smallest end comes last, so "the last containing entry in key
 * order" is the one lookup prefers. */

static int key_cmp(const entry_t *a, const entry_t *b)
{
	if (a->start != b->start)
		return a->start < b->start ? -1 : 1;
	if (a->end != b->end)
		return a->end > b->end ? -1 : 1;
	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	return 0;
}

static int height(const entry_t *n)
{
	return n ? n->height : 0;
}

static void update(entry_t *n)
{
	int hl = height(n->left), hr = height(n->right);

	n->height = 1 + (hl > hr ? hl : hr);
	n->max_end = n->end;
	if (n->left && n->left->max_end > n->max_end)
		n->max_end = n->left->max_end;
	if (n->right && n->right->max_end > n->max_end)
		n->max_end = n->right->max_end;
}

static entry_t *rotate_right(entry_t *n)
{
	entry_t *l = n->left;

	n->left = l->right;
	l->right = n;
	update(n);
	update(l);
	return l;
}

static entry_t *rotate_left(entry_t *n)
{
	entry_t *r = n->right;

	n->right = r->left;
	r->left = n;
	update(n);
	update(r);
	return r;
}

/* Restores the AVL property at n, whose subtrees are balanced and differ in
 * height by at most 2; returns the subtree's new root. */
static entry_t *rebalance(entry_t *n)
{
	int bf;

	update(n);
	bf = height(n->left) - height(n->right);
	if (bf > 1) {
		if (height(n->left->left) < height(n->left->right))
			n->left = rotate_left(n->left);
		return rotate_right(n);
	}
	if (bf < -1) {
		if (height(n->right->right) < height(n->right->left))
			n->right = rotate_right(n->right);
		return rotate_left(n);
	}
	return n;
}

static entry_t *avl_insert(entry_t *root, entry_t *n)
{
	if (!root)
		return n;
	if (key_cmp(n, root) < 0)
		root->left = avl_insert(root->left, n);
	else
		root->right = avl_insert(root->right, n);
	return rebalance(root);
}

/* Unlinks the leftmost node of root's subtree into *min. */
static entry_t *avl_remove_min(entry_t *root, entry_t **min)
{
	if (!root->left) {
		*min = root;
		return root->right;
	}
	root->left = avl_remove_min(root->left, min);
	return rebalance(root);
}

/* Unlinks n (which must be in the subtree) and returns the new root. Nodes
 * are relinked, never copied: callers hold pointers to them. */
static entry_t *avl_remove(entry_t *root, entry_t *n)
{
	int c = key_cmp(n, root);
	entry_t *succ;

	if (c < 0) {
		root->left = avl_remove(root->left, n);
		return rebalance(root);
	}
	if (c > 0) {
		root->right = avl_remove(root->right, n);
		return rebalance(root);
	}
	if (!root->left)
		return root->right;
	if (!root->right)
		return root->left;
	root->right = avl_remove_min(root->right, &succ);
	succ->left = root->left;
	succ->right = root->right;
	return rebalance(succ);
}

/*
 * The last node in key order with start <= a and end >= b, or NULL.
 * O(height): nodes with start > a lead left along one path; at a node with
 * start <= a the right subtree continues that path, and the left subtree
 * lies wholly at or before a, where max_end tells at once whether a hit is
 * there and, if so, a single descent finds it.
 */
static entry_t *find_containing(entry_t *n, uintptr_t a, uintptr_t b)
{
	entry_t *hit;

	while (n && n->max_end >= b) {
		if (n->start > a) {
			n = n->left;
			continue;
		}
		hit = find_containing(n->right, a, b);
		if (hit)
			return hit;
		if (n->end >= b)
			return n;
		n = n->left;
	}
	return NULL;
}

/*
 * Some node overlapping [lo, hi) (start < hi and end > lo), or NULL, in
 * O(height). Going left when the left subtree reaches past lo is safe: if no
 * node there overlaps, the one reaching past lo starts at or after hi, and
 * so does everything to its right.
 */
static entry_t *find_overlapping(entry_t *n, uintptr_t lo, uintptr_t hi)
{
	while (n) {
		if (n->start < hi && n->end > lo)
			return n;
		if (n->left && n->left->max_end > lo)
			n = n->left;
		else
			n = n->right;
	}
	return NULL;
}

static void free_subtree(entry_t *n, void (*release)(void *, void *), void *arg)
{
	while (n) {
		entry_t *right = n->right;

		free_subtree(n->left, release, arg);
		if (release)
			release(n->payload, arg);
		free(n);
		n = right;
	}
}

/* ---- the cache -------------------------------------------------------------- */

static int is_pow2(size_t x)
{
	return x && !(x & (x - 1));
}

int fabnet_regcache_init(struct fabnet_regcache *rc, size_t page_size)
{
	memset(rc, 0, sizeof(*rc));
	if (page_size == 0)
		page_size = FABNET_REGCACHE_DEFAULT_PAGE;
	if (!is_pow2(page_size))
		return -1;
	rc->page_size = page_size;
	return 0;
}

void fabnet_regcache_fini(struct fabnet_regcache *rc, void (*release)(void *payload, void *arg),
			  void *arg)
{
	entry_t *e, *next;

	for (size_t i = 0; i < rc->ntrees; i++)
		free_subtree(rc->trees[i].root, release, arg);
	for (e = rc->detached; e; e = next) {
		next = e->right;
		if (release)
			release(e->payload, arg);
		free(e);
	}
	free(rc->trees);
	memset(rc, 0, sizeof(*rc));
}

int fabnet_regcache_align(uintptr_t addr, size_t len, size_t page, uintptr_t *start,
			  uintptr_t *end)
{
	uintptr_t last, mask;

	if (page == 0)
		page = FABNET_REGCACHE_DEFAULT_PAGE;
	if (len == 0 || !is_pow2(page) || len - 1 > UINTPTR_MAX - addr)
		return -1;
	mask = (uintptr_t)page - 1;
	last = addr + (len - 1); /* the last byte: no overflow, checked above */
	if ((last | mask) == UINTPTR_MAX)
		return -1; /* the page-aligned end would be 2^N: not representable */
	*start = addr & ~mask;
	*end = (last | mask) + 1;
	return 0;
}

/* [addr, addr+len) as [*lo, *hi): 0, or -1 when len is 0 or it wraps. */
static int query_range(uintptr_t addr, size_t len, uintptr_t *lo, uintptr_t *hi)
{
	if (len == 0 || len > UINTPTR_MAX - addr)
		return -1;
	*lo = addr;
	*hi = addr + len;
	return 0;
}

static struct fabnet_regcache_tree *tree_of(const struct fabnet_regcache *rc, int type)
{
	for (size_t i = 0; i < rc->ntrees; i++)
		if (rc->trees[i].type == type)
			return &rc->trees[i];
	return NULL;
}

struct fabnet_regcache_entry *fabnet_regcache_lookup(const struct fabnet_regcache *rc,
						     uintptr_t addr, size_t len, int type)
{
	struct fabnet_regcache_tree *t = tree_of(rc, type);
	uintptr_t lo, hi;

	if (!t || query_range(addr, len, &lo, &hi))
		return NULL;
	return find_containing(t->root, lo, hi);
}

int fabnet_regcache_insert(struct fabnet_regcache *rc, uintptr_t start, uintptr_t end, int type,
			   void *payload, struct fabnet_regcache_entry **out)
{
	struct fabnet_regcache_tree *t;
	uintptr_t mask = (uintptr_t)rc->page_size - 1;
	entry_t *e;

	*out = NULL;
	if (start >= end || (start & mask) || (end & mask))
		return -EINVAL;
	t = tree_of(rc, type);
	if (!t) {
		if (rc->ntrees == rc->trees_cap) {
			size_t cap = rc->trees_cap ? 2 * rc->trees_cap : 4;
			void *p = realloc(rc->trees, cap * sizeof(*rc->trees));

			if (!p)
				return -ENOMEM;
			rc->trees = p;
			rc->trees_cap = cap;
		}
		t = &rc->trees[rc->ntrees++];
		t->type = type;
		t->count = 0;
		t->root = NULL;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->start = start;
	e->end = end;
	e->type = type;
	e->payload = payload;
	e->refs = 1;
	e->indexed = 1;
	e->seq = rc->next_seq++;
	e->height = 1;
	e->max_end = end;
	t->root = avl_insert(t->root, e);
	t->count++;
	rc->count++;
	*out = e;
	return 0;
}

size_t fabnet_regcache_ref(struct fabnet_regcache_entry *e)
{
	return ++e->refs;
}

/* Takes an indexed entry out of its tree. */
static void unindex(struct fabnet_regcache *rc, entry_t *e)
{
	struct fabnet_regcache_tree *t = tree_of(rc, e->type);

	if (t) { /* always: an indexed entry's tree exists (and is never removed) */
		t->root = avl_remove(t->root, e);
		t->count--;
		rc->count--;
	}
	e->indexed = 0;
	e->left = e->right = NULL;
}

size_t fabnet_regcache_unref(struct fabnet_regcache *rc, struct fabnet_regcache_entry *e,
			     void **payload)
{
	if (payload)
		*payload = NULL;
	if (--e->refs > 0)
		return e->refs;
	if (e->indexed) {
		unindex(rc, e);
	} else {
		if (e->left)
			e->left->right = e->right;
		else
			rc->detached = e->right;
		if (e->right)
			e->right->left = e->left;
		rc->ndetached--;
	}
	if (payload)
		*payload = e->payload;
	free(e);
	return 0;
}

long fabnet_regcache_remove_range(struct fabnet_regcache *rc, uintptr_t addr, size_t len,
				  void (*callback)(struct fabnet_regcache_entry *e, void *arg),
				  void *arg)
{
	uintptr_t lo, hi;
	long removed = 0;

	if (len == 0)
		return 0;
	if (query_range(addr, len, &lo, &hi))
		return -1;
	/* One search from the root per entry: the callback may unref (and so
	 * free) the entry, and nothing is remembered across it. */
	for (size_t i = 0; i < rc->ntrees; i++) {
		entry_t *e;

		while ((e = find_overlapping(rc->trees[i].root, lo, hi)) != NULL) {
			unindex(rc, e);
			e->right = rc->detached;
			if (rc->detached)
				rc->detached->left = e;
			rc->detached = e;
			rc->ndetached++;
			removed++;
			if (callback)
				callback(e, arg);
		}
	}
	return removed;
}

/* ---- invariants, for tests ------------------------------------------------- */

/* Checks the subtree and returns its node count, or -1. */
static long check_subtree(const entry_t *n, int type, uintptr_t mask, const entry_t **prev)
{
	long nl, nr;
	int hl, hr;
	uintptr_t max_end;

	if (!n)
		return 0;
	nl = check_subtree(n->left, type, mask, prev);
	if (nl < 0)
		return -1;
	if (n->type != type || !n->indexed || n->refs == 0 || n->start >= n->end ||
	    (n->start & mask) || (n->end & mask))
		return -1;
	if (*prev && key_cmp(*prev, n) >= 0)
		return -1;
	*prev = n;
	nr = check_subtree(n->right, type, mask, prev);
	if (nr < 0)
		return -1;
	hl = height(n->left);
	hr = height(n->right);
	if (hl - hr > 1 || hr - hl > 1 || n->height != 1 + (hl > hr ? hl : hr))
		return -1;
	max_end = n->end;
	if (n->left && n->left->max_end > max_end)
		max_end = n->left->max_end;
	if (n->right && n->right->max_end > max_end)
		max_end = n->right->max_end;
	if (n->max_end != max_end)
		return -1;
	return nl + nr + 1;
}

int fabnet_regcache_check(const struct fabnet_regcache *rc)
{
	size_t total = 0, ndetached = 0;
	const entry_t *e, *prev_link = NULL;

	for (size_t i = 0; i < rc->ntrees; i++) {
		const struct fabnet_regcache_tree *t = &rc->trees[i];
		const entry_t *prev = NULL;
		long n = check_subtree(t->root, t->type, rc->page_size - 1, &prev);

		if (n < 0 || (size_t)n != t->count || tree_of(rc, t->type) != t)
			return -1;
		total += (size_t)n;
	}
	if (total != rc->count)
		return -1;
	for (e = rc->detached; e; prev_link = e, e = e->right) {
		if (e->indexed || e->refs == 0 || e->left != prev_link)
			return -1;
		ndetached++;
	}
	return ndetached == rc->ndetached ? 0 : -1;
}
