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
    unsigned char nonce[NONCE_SIZE], none[TAG_SIZE];
    unsigned char *data = view.buf;
    int length;
    nonce_of(number, nonce);
    int ok = EVP_EncryptInit_ex(self->sign, NULL, NULL, NULL, nonce) == 1
        && EVP_EncryptUpdate(self->sign, NULL, &length, data, (int)end) == 1
        && EVP_EncryptFinal_ex(self->sign, none, &length) == 1
        && EVP_CIPHER_CTX_ctrl(self->sign, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, data + end) == 1;
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
    unsigned char nonce[NONCE_SIZE], tag[TAG_SIZE], none[TAG_SIZE];
    const unsigned char *data = view.buf;
    int length;
    nonce_of(number, nonce);
    memcpy(tag, data + end, TAG_SIZE);  /* the control takes a mutable pointer */
    int set = EVP_DecryptInit_ex(self->verify, NULL, NULL, NULL, nonce) == 1
        && EVP_DecryptUpdate(self->verify, NULL, &length, data, (int)end) == 1
        && EVP_CIPHER_CTX_ctrl(self->verify, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, tag) == 1;
    /* The final step compares the tags in constant time; it fails on a wrong one. */
    int genuine = set && EVP_DecryptFinal_ex(self->verify, none, &length) == 1;
    PyBuffer_Release(&view);
    if (!genuine) {
        ERR_clear_error();  /* a forgery leaves nothing behind for the next OpenSSL caller */
    }
    if (!set) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not check a GMAC tag");
        return NULL;
    }
    return PyBool_FromLong(genuine);
}

static PyMethodDef Gmac_methods[] = {
    {"sign", (PyCFunction)(void (*)(void))Gmac_sign, METH_FASTCALL, sign_doc},
    {"verify", (PyCFunction)(void (*)(void))Gmac_verify, METH_FASTCALL, verify_doc},
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
    .m_doc = PyDoc_STR("AES-128-GMAC with the key schedule kept: see loadbalancer.gmac."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__gmac(void) {
    if (PyType_Ready(&GmacType) < 0) {
        return NULL;
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
