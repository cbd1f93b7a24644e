/* AES-128-GMAC with a key schedule kept between datagrams: the compiled form of
 * loadbalancer.gmac.PureGmac, which is the reference and the fallback.
 *
 * Why compiled: the datagram's tag is the one step every datagram takes on both ends,
 * and through the `cryptography` package each call sets up a new cipher context (key
 * schedule, GHASH tables): 1.1 us to check a 1,472-byte datagram's tag and 2.1 us to
 * write one. Here the contexts live as long as the key, so a tag costs the GHASH of the
 * bytes and a nonce. The primitive is OpenSSL's, as it is under `cryptography`; nothing
 * here computes AES or GHASH itself.
 *
 * The codec's fast path for fragments lives here too (seal_fragments, open_fragments):
 * nearly every datagram is one, and at 1,472 bytes the interpreter's steps around the tag
 * (packing and parsing the headers, checking them, slicing the payload) cost more than
 * the tag. loadbalancer.wire is the reference for the layout and does the same in Python
 * where this is not built; a test holds the two to the same bytes.
 *
 * Thread safety: the contexts are shared by every call on one object, and each call
 * holds the GIL throughout, so calls on one object never overlap.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#define KEY_SIZE 16
#define NONCE_SIZE 12
#define TAG_SIZE 16

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *sign;
    EVP_CIPHER_CTX *verify;
} Gmac;

/* GCM's 96-bit nonce: four zero bytes, then the packet number, big-endian. */
static void nonce_of(unsigned long long number, unsigned char nonce[NONCE_SIZE]) {
    memset(nonce, 0, 4);
    for (int i = 11; i >= 4; i--) {
        nonce[i] = (unsigned char)(number & 0xff);
        number >>= 8;
    }
}

/* The tag of data[:end] into out (which may be data + end): 1 on success. */
static int tag_into(Gmac *self, unsigned long long number, const unsigned char *data,
                    Py_ssize_t end, unsigned char *out) {
    unsigned char nonce[NONCE_SIZE], none[TAG_SIZE];
    int length;
    nonce_of(number, nonce);
    return EVP_EncryptInit_ex(self->sign, NULL, NULL, NULL, nonce) == 1
        && EVP_EncryptUpdate(self->sign, NULL, &length, data, (int)end) == 1
        && EVP_EncryptFinal_ex(self->sign, none, &length) == 1
        && EVP_CIPHER_CTX_ctrl(self->sign, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, out) == 1;
}

/* Whether data[end:end + 16] is the tag of data[:end]: 1 genuine, 0 not, -1 OpenSSL
 * failed (with no exception set). */
static int tag_genuine(Gmac *self, unsigned long long number, const unsigned char *data,
                       Py_ssize_t end) {
    unsigned char nonce[NONCE_SIZE], tag[TAG_SIZE], none[TAG_SIZE];
    int length;
    nonce_of(number, nonce);
    memcpy(tag, data + end, TAG_SIZE);  /* the control takes a mutable pointer */
    int set = EVP_DecryptInit_ex(self->verify, NULL, NULL, NULL, nonce) == 1
        && EVP_DecryptUpdate(self->verify, NULL, &length, data, (int)end) == 1
        && EVP_CIPHER_CTX_ctrl(self->verify, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, tag) == 1;
    /* The final step compares the tags in constant time; it fails on a wrong one. */
    int genuine = set && EVP_DecryptFinal_ex(self->verify, none, &length) == 1;
    if (!genuine) {
        ERR_clear_error();  /* a forgery leaves nothing behind for the next OpenSSL caller */
    }
    return set ? genuine : -1;
}

static int Gmac_init(Gmac *self, PyObject *args, PyObject *kwargs) {
    Py_buffer key;
    static char *names[] = {"key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*", names, &key)) {
        return -1;
    }
    if (key.len != KEY_SIZE) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "a GMAC key is %d bytes, not %zd", KEY_SIZE, key.len);
        return -1;
    }
    EVP_CIPHER_CTX_free(self->sign);  /* __init__ called again: start afresh */
    EVP_CIPHER_CTX_free(self->verify);
    self->sign = EVP_CIPHER_CTX_new();
    self->verify = EVP_CIPHER_CTX_new();
    int ok = self->sign != NULL && self->verify != NULL
        && EVP_EncryptInit_ex(self->sign, EVP_aes_128_gcm(), NULL, key.buf, NULL) == 1
        && EVP_DecryptInit_ex(self->verify, EVP_aes_128_gcm(), NULL, key.buf, NULL) == 1;
    PyBuffer_Release(&key);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-128-GCM");
        return -1;
    }
    return 0;
}

static void Gmac_dealloc(Gmac *self) {
    EVP_CIPHER_CTX_free(self->sign);
    EVP_CIPHER_CTX_free(self->verify);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The number, the buffer and where its tag begins, checked: 0 on success. */
static int parse(Gmac *self, PyObject *const *args, Py_ssize_t nargs, int flags,
                 unsigned long long *number, Py_buffer *view, Py_ssize_t *end) {
    if (self->sign == NULL) {
        PyErr_SetString(PyExc_ValueError, "Gmac used before __init__");
        return -1;
    }
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "takes the number, the buffer and the tag's offset");
        return -1;
    }
    *number = PyLong_AsUnsignedLongLong(args[0]);
    if (*number == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *end = PyLong_AsSsize_t(args[2]);
    if (*end == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (PyObject_GetBuffer(args[1], view, flags) < 0) {
        return -1;
    }
    if (*end < 0 || *end > INT_MAX || view->len - *end < TAG_SIZE) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "no %d-byte tag at %zd of %zd bytes", TAG_SIZE, *end,
                     view->len);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(sign_doc, "sign(number, buffer, end)\n\n"
             "Write the tag of buffer[:end] under nonce `number` into buffer[end:end + 16].");

static PyObject *Gmac_sign(Gmac *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned long long number;
    Py_buffer view;
    Py_ssize_t end;
    if (parse(self, args, nargs, PyBUF_WRITABLE, &number, &view, &end) < 0) {
        return NULL;
    }
    unsigned char *data = view.buf;
    int ok = tag_into(self, number, data, end, data + end);
    PyBuffer_Release(&view);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not compute a GMAC tag");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(verify_doc, "verify(number, data, end) -> bool\n\n"
             "Whether data[end:end + 16] is the tag of data[:end] under nonce `number`.");

static PyObject *Gmac_verify(Gmac *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned long long number;
    Py_buffer view;
    Py_ssize_t end;
    if (parse(self, args, nargs, PyBUF_SIMPLE, &number, &view, &end) < 0) {
        return NULL;
    }
    int genuine = tag_genuine(self, number, view.buf, end);
    PyBuffer_Release(&view);
    if (genuine < 0) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not check a GMAC tag");
        return NULL;
    }
    return PyBool_FromLong(genuine);
}

/* ---- the fragment fast path ---------------------------------------------------------
 * A fragment datagram, as loadbalancer.wire lays it out (all big-endian):
 *   0 magic and version (3) | 3 kind | 4 flags | 5 role | 6 src (8) | 14 dst (8)
 *   | 22 number (8) | 30 body length (2) | 32 seq (8) | 40 index (2) | 42 count (2)
 *   | 44 part | 45 parts | 46 payload | tag (16)
 */
#define PREFIX_SIZE 3
#define AT_KIND 3
#define AT_FLAGS 4
#define AT_ROLE 5
#define AT_SRC 6
#define AT_DST 14
#define AT_NUMBER 22
#define AT_LENGTH 30
#define HEADER_SIZE 32
#define AT_SEQ 32
#define AT_INDEX 40
#define AT_COUNT 42
#define AT_PART 44
#define AT_PARTS 45
#define FRAGMENT_SIZE 46
#define FLAG_AGAIN 0x01

static PyObject *names[8];  /* a Fragment's fields, interned, in its constructor's order */
static const char *const NAMES[8] = {"seq", "index", "count", "kind", "data", "part",
                                     "parts", "again"};

static void put(unsigned char *at, unsigned long long value, int bytes) {
    for (int i = bytes - 1; i >= 0; i--) {
        at[i] = (unsigned char)(value & 0xff);
        value >>= 8;
    }
}

static unsigned long long get(const unsigned char *at, int bytes) {
    unsigned long long value = 0;
    for (int i = 0; i < bytes; i++) {
        value = value << 8 | at[i];
    }
    return value;
}

/* An int attribute of a fragment within 0..limit: 0 on success. */
static int field(PyObject *fragment, int which, unsigned long long limit,
                 unsigned long long *value) {
    PyObject *got = PyObject_GetAttr(fragment, names[which]);
    if (got == NULL) {
        return -1;
    }
    *value = PyLong_AsUnsignedLongLong(got);
    Py_DECREF(got);
    if (*value == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (*value > limit) {
        PyErr_Format(PyExc_ValueError, "a fragment's %s of %llu is over %llu",
                     NAMES[which], *value, limit);
        return -1;
    }
    return 0;
}

/* What a call of seal_fragments or open_fragments shares between its datagrams. */
typedef struct {
    unsigned char prefix[PREFIX_SIZE];  /* magic and version */
    unsigned char sender[AT_NUMBER - AT_ROLE];  /* role, src and dst, as in a header */
    unsigned long long number;  /* seal: the first datagram's packet number */
    Py_ssize_t max_datagram;  /* open: the largest datagram taken */
    PyObject *kinds;  /* open: 256 items by kind, the kind's object or None if not a fragment's */
    PyObject *make;  /* open: the Fragment type */
} Batch;

/* One fragment's datagram, the i-th of the call, or NULL with an exception set. */
static PyObject *seal_one(Gmac *self, PyObject *fragment, Py_ssize_t i, const Batch *batch) {
    unsigned long long number = batch->number + (unsigned long long)i;
    unsigned long long seq, index, count, kind, part, parts;
    if (field(fragment, 0, ULLONG_MAX, &seq) < 0 || field(fragment, 1, 0xffff, &index) < 0
        || field(fragment, 2, 0xffff, &count) < 0 || field(fragment, 3, 0xff, &kind) < 0
        || field(fragment, 5, 0xff, &part) < 0 || field(fragment, 6, 0xff, &parts) < 0) {
        return NULL;
    }
    PyObject *again = PyObject_GetAttr(fragment, names[7]);
    if (again == NULL) {
        return NULL;
    }
    int flag = PyObject_IsTrue(again);
    Py_DECREF(again);
    PyObject *data = PyObject_GetAttr(fragment, names[4]);
    if (flag < 0 || data == NULL) {
        Py_XDECREF(data);
        return NULL;
    }
    Py_buffer payload;
    if (PyObject_GetBuffer(data, &payload, PyBUF_SIMPLE) < 0) {
        Py_DECREF(data);
        return NULL;
    }
    Py_ssize_t end = FRAGMENT_SIZE + payload.len;
    PyObject *out = NULL;
    if (end - HEADER_SIZE > 0xffff) {
        PyErr_Format(PyExc_ValueError, "a fragment of %zd bytes does not fit a datagram",
                     payload.len);
    } else if ((out = PyByteArray_FromStringAndSize(NULL, end + TAG_SIZE)) != NULL) {
        unsigned char *at = (unsigned char *)PyByteArray_AS_STRING(out);
        memcpy(at, batch->prefix, PREFIX_SIZE);
        at[AT_KIND] = (unsigned char)kind;
        at[AT_FLAGS] = flag ? FLAG_AGAIN : 0;
        memcpy(at + AT_ROLE, batch->sender, AT_NUMBER - AT_ROLE);
        put(at + AT_NUMBER, number, 8);
        put(at + AT_LENGTH, (unsigned long long)(end - HEADER_SIZE), 2);
        put(at + AT_SEQ, seq, 8);
        put(at + AT_INDEX, index, 2);
        put(at + AT_COUNT, count, 2);
        at[AT_PART] = (unsigned char)part;
        at[AT_PARTS] = (unsigned char)parts;
        memcpy(at + FRAGMENT_SIZE, payload.buf, payload.len);
        if (!tag_into(self, number, at, end, at + end)) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not compute a GMAC tag");
            Py_CLEAR(out);
        }
    }
    PyBuffer_Release(&payload);
    Py_DECREF(data);
    return out;
}

/* (number, Fragment) for a datagram of the expected sender that passes every check of
 * the fast path, Py_None for any other (the caller decodes those one by one, with the
 * reasons), NULL on an error. */
static PyObject *open_one(Gmac *self, PyObject *datagram, Py_ssize_t i, const Batch *batch) {
    (void)i;
    Py_buffer view;
    if (PyObject_GetBuffer(datagram, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *at = view.buf;
    Py_ssize_t size = view.len, end = size - TAG_SIZE;
    int fast = size >= FRAGMENT_SIZE + TAG_SIZE && size <= batch->max_datagram
        && memcmp(at, batch->prefix, PREFIX_SIZE) == 0
        && PyTuple_GET_ITEM(batch->kinds, at[AT_KIND]) != Py_None
        && (at[AT_FLAGS] & ~FLAG_AGAIN) == 0
        && memcmp(at + AT_ROLE, batch->sender, AT_NUMBER - AT_ROLE) == 0
        && (Py_ssize_t)get(at + AT_LENGTH, 2) == size - HEADER_SIZE - TAG_SIZE;
    unsigned long long number = fast ? get(at + AT_NUMBER, 8) : 0;
    int genuine = fast ? tag_genuine(self, number, at, end) : 0;
    if (genuine < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not check a GMAC tag");
        return NULL;
    }
    if (!genuine) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *items[9] = {NULL};
    items[0] = PyLong_FromUnsignedLongLong(number);
    items[1] = PyLong_FromUnsignedLongLong(get(at + AT_SEQ, 8));
    items[2] = PyLong_FromUnsignedLong((unsigned long)get(at + AT_INDEX, 2));
    items[3] = PyLong_FromUnsignedLong((unsigned long)get(at + AT_COUNT, 2));
    items[4] = Py_NewRef(PyTuple_GET_ITEM(batch->kinds, at[AT_KIND]));
    items[6] = PyLong_FromUnsignedLong(at[AT_PART]);
    items[7] = PyLong_FromUnsignedLong(at[AT_PARTS]);
    items[8] = PyBool_FromLong(at[AT_FLAGS] & FLAG_AGAIN);
    PyBuffer_Release(&view);
    PyObject *whole = PyMemoryView_FromObject(datagram);
    if (whole != NULL) {
        items[5] = PySequence_GetSlice(whole, FRAGMENT_SIZE, end);  /* a view: no copy */
        Py_DECREF(whole);
    }
    PyObject *result = NULL;
    int made = 1;
    for (int k = 0; k < 9; k++) {
        made = made && items[k] != NULL;
    }
    if (made) {
        PyObject *fragment = PyObject_Vectorcall(batch->make, items + 1, 8, NULL);
        if (fragment != NULL) {
            result = PyTuple_Pack(2, items[0], fragment);
            Py_DECREF(fragment);
        }
    }
    for (int k = 0; k < 9; k++) {
        Py_XDECREF(items[k]);
    }
    return result;
}

typedef PyObject *(*Each)(Gmac *self, PyObject *item, Py_ssize_t i, const Batch *batch);

/* The list of each(item) for the items of a sequence; NULL at the first error. */
static PyObject *each_of(Gmac *self, PyObject *sequence, Each each, const Batch *batch) {
    PyObject *items = PySequence_Fast(sequence, "expected a sequence");
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *done = each(self, PySequence_Fast_GET_ITEM(items, i), i, batch);
        if (done == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, done);
    }
    Py_DECREF(items);
    return out;
}

/* The prefix (3 bytes of magic and version) and role, src and dst, from the four
 * arguments at args[at], of `nargs` where `usage` takes `expected`: 0 on success. */
static int batch_of(Gmac *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected,
                    Py_ssize_t at, const char *usage, Batch *batch) {
    if (self->sign == NULL) {
        PyErr_SetString(PyExc_ValueError, "Gmac used before __init__");
        return -1;
    }
    if (nargs != expected) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    args += at;
    if (!PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) != PREFIX_SIZE) {
        PyErr_SetString(PyExc_TypeError, "the prefix is the 3 bytes of magic and version");
        return -1;
    }
    memcpy(batch->prefix, PyBytes_AS_STRING(args[0]), PREFIX_SIZE);
    unsigned long role = PyLong_AsUnsignedLong(args[1]);
    unsigned long long src = PyLong_AsUnsignedLongLong(args[2]);
    unsigned long long dst = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) {
        return -1;
    }
    if (role > 0xff) {
        PyErr_SetString(PyExc_ValueError, "a role is a byte");
        return -1;
    }
    batch->sender[0] = (unsigned char)role;
    put(batch->sender + AT_SRC - AT_ROLE, src, 8);
    put(batch->sender + AT_DST - AT_ROLE, dst, 8);
    return 0;
}

PyDoc_STRVAR(seal_doc, "seal_fragments(fragments, prefix, role, src, dst, number) -> list\n\n"
             "Each fragment's datagram, as bytearrays, under packet numbers from `number` "
             "on: what loadbalancer.wire.encode_fragment makes of each.");

static PyObject *Gmac_seal_fragments(Gmac *self, PyObject *const *args, Py_ssize_t nargs) {
    Batch batch = {0};
    if (batch_of(self, args, nargs, 6, 1, "seal_fragments(fragments, prefix, role, src, dst, "
                 "number)", &batch) < 0) {
        return NULL;
    }
    batch.number = PyLong_AsUnsignedLongLong(args[5]);
    if (batch.number == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    return each_of(self, args[0], seal_one, &batch);
}

PyDoc_STRVAR(open_doc, "open_fragments(datagrams, max_datagram, prefix, role, src, dst, kinds, "
             "make) -> list\n\n"
             "For each datagram, (number, make(seq, index, count, kind, payload, part, parts, "
             "again)) if it is a genuine fragment datagram of at most max_datagram bytes "
             "from (role, src) to dst of a kind that kinds[kind] (a 256-tuple) names, not None; "
             "else None.");

static PyObject *Gmac_open_fragments(Gmac *self, PyObject *const *args, Py_ssize_t nargs) {
    Batch batch = {0};
    if (batch_of(self, args, nargs, 8, 2, "open_fragments(datagrams, max_datagram, prefix, "
                 "role, src, dst, kinds, make)", &batch) < 0) {
        return NULL;
    }
    batch.max_datagram = PyLong_AsSsize_t(args[1]);
    if (batch.max_datagram == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyTuple_Check(args[6]) || PyTuple_GET_SIZE(args[6]) != 256) {
        PyErr_SetString(PyExc_TypeError, "kinds is a tuple of 256: the kind, or None");
        return NULL;
    }
    batch.kinds = args[6];
    batch.make = args[7];
    return each_of(self, args[0], open_one, &batch);
}

static PyMethodDef Gmac_methods[] = {
    {"sign", (PyCFunction)(void (*)(void))Gmac_sign, METH_FASTCALL, sign_doc},
    {"verify", (PyCFunction)(void (*)(void))Gmac_verify, METH_FASTCALL, verify_doc},
    {"seal_fragments", (PyCFunction)(void (*)(void))Gmac_seal_fragments, METH_FASTCALL,
     seal_doc},
    {"open_fragments", (PyCFunction)(void (*)(void))Gmac_open_fragments, METH_FASTCALL,
     open_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GmacType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loadbalancer._gmac.Gmac",
    .tp_doc = PyDoc_STR("Gmac(key)\n\nAES-128-GMAC under one 16-byte key."),
    .tp_basicsize = sizeof(Gmac),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Gmac_init,
    .tp_dealloc = (destructor)Gmac_dealloc,
    .tp_methods = Gmac_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "loadbalancer._gmac",
    .m_doc = PyDoc_STR("AES-128-GMAC with the key schedule kept, and the codec's fragment "
                       "fast path: see loadbalancer.gmac and loadbalancer.wire."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__gmac(void) {
    if (PyType_Ready(&GmacType) < 0) {
        return NULL;
    }
    for (int i = 0; i < 8; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(NAMES[i])) == NULL) {
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&GmacType);
    if (PyModule_AddObject(m, "Gmac", (PyObject *)&GmacType) < 0) {
        Py_DECREF(&GmacType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
