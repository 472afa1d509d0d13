/* The broker's per-message loop in C: read a batch of [topic][encoding][envelope] messages
 * from the XSUB socket, and send a stamped batch out of the XPUB socket.
 *
 * Why: in Python each frame costs a call into pyzmq (~0.7 us), and the broker handles seven
 * frames per message; this is most of its CPU (docs/performance.md). Everything that decides
 * something (validation, sequence numbers, the log, history) stays in bus/broker.py, which
 * falls back to its own Python loop when this module was not built (no C compiler).
 *
 * A batch's accepted messages stay as libzmq received them (a Held object) and, once Python
 * has validated and logged the batch, go out with zmq_msg_send: no copy and no Python object
 * per message. While the frames are at hand, recv_batch also writes the batch's event log row
 * (what bus/eventlog.py's encode_rows would write, byte for byte), so the log costs Python one
 * bytes object per batch.
 *
 * No libzmq headers or link: the functions are looked up in the libzmq that pyzmq itself
 * loaded (dlsym on pyzmq's backend module, which searches its dependencies), so the socket
 * handles from `Socket.underlying` always belong to the same library instance.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

typedef struct { unsigned char _[64]; } __attribute__((aligned(8))) zmq_msg_t;

#define ZMQ_DONTWAIT 1
#define ZMQ_SNDMORE 2
#define NFRAMES 3

static struct {
    int (*msg_init)(zmq_msg_t *);
    int (*msg_recv)(zmq_msg_t *, void *, int);
    void *(*msg_data)(zmq_msg_t *);
    size_t (*msg_size)(const zmq_msg_t *);
    int (*msg_more)(const zmq_msg_t *);
    int (*msg_close)(zmq_msg_t *);
    int (*send)(void *, const void *, size_t, int);
    int (*msg_send)(zmq_msg_t *, void *, int);
    int (*zerrno)(void);
    const char *(*strerror)(int);
    void (*version)(int *, int *, int *);
} z;

static int bound = 0;
static PyObject *enc_frames = NULL;  /* tuple of bytes: the known encoding frames */
static PyObject *enc_names = NULL;   /* tuple of str: their names, same order */
static Py_ssize_t max_payload = 0;

/* bind(pyzmq_backend_path, encodings: tuple[bytes], names: tuple[str], max_payload) ->
 * (major, minor, patch) of the libzmq found */
static PyObject *hp_bind(PyObject *self, PyObject *args) {
    const char *path;
    PyObject *encs, *names;
    Py_ssize_t maxp;
    if (!PyArg_ParseTuple(args, "sO!O!n", &path, &PyTuple_Type, &encs, &PyTuple_Type, &names, &maxp))
        return NULL;
    if (PyTuple_GET_SIZE(encs) != PyTuple_GET_SIZE(names)) {
        PyErr_SetString(PyExc_ValueError, "encodings and names differ in length");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(encs); i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(encs, i)) || !PyUnicode_Check(PyTuple_GET_ITEM(names, i))) {
            PyErr_SetString(PyExc_TypeError, "encodings must be bytes and names str");
            return NULL;
        }
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL) {
        PyErr_Format(PyExc_ImportError, "pyzmq's backend is not loaded: %s", dlerror());
        return NULL;
    }
#define SYM(field, name)                                                          \
    *(void **)(&z.field) = dlsym(h, name);                                        \
    if (z.field == NULL) {                                                        \
        PyErr_Format(PyExc_ImportError, "libzmq has no %s", name);                \
        return NULL;                                                              \
    }
    SYM(msg_init, "zmq_msg_init")
    SYM(msg_recv, "zmq_msg_recv")
    SYM(msg_data, "zmq_msg_data")
    SYM(msg_size, "zmq_msg_size")
    SYM(msg_more, "zmq_msg_more")
    SYM(msg_close, "zmq_msg_close")
    SYM(send, "zmq_send")
    SYM(msg_send, "zmq_msg_send")
    SYM(zerrno, "zmq_errno")
    SYM(strerror, "zmq_strerror")
    SYM(version, "zmq_version")
#undef SYM
    /* the handle stays open on purpose: the functions must outlive this call */
    Py_INCREF(encs);
    Py_XSETREF(enc_frames, encs);
    Py_INCREF(names);
    Py_XSETREF(enc_names, names);
    max_payload = maxp;
    bound = 1;
    int major, minor, patch;
    z.version(&major, &minor, &patch);
    return Py_BuildValue("(iii)", major, minor, patch);
}

/* The libzmq socket behind a `Socket.underlying` address; NULL with an exception set. */
static void *socket_handle(PyObject *o) {
    if (!bound) {
        PyErr_SetString(PyExc_RuntimeError, "bind() first");
        return NULL;
    }
    void *p = PyLong_AsVoidPtr(o);
    if (p == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "null socket handle");
    return p;
}

/* Which known encoding a frame is: its index, or -1. */
static Py_ssize_t encoding_index(const char *data, size_t size) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(enc_frames); i++) {
        PyObject *e = PyTuple_GET_ITEM(enc_frames, i);
        if ((size_t)PyBytes_GET_SIZE(e) == size && memcmp(PyBytes_AS_STRING(e), data, size) == 0)
            return i;
    }
    return -1;
}

/* Held: the frames of a batch's accepted messages, kept as libzmq received them so that
 * send_held can forward them without copying. Python sees only len() and records(). */
typedef struct {
    PyObject_HEAD
    zmq_msg_t *msgs;    /* NFRAMES per message */
    Py_ssize_t *encs;   /* each message's encoding index */
    PyObject *topics;   /* list of str, one per message */
    Py_ssize_t n;
    int sent;
} HeldObject;

static void held_dealloc(HeldObject *h) {
    /* a sent frame was emptied by zmq_msg_send; closing it is still required and harmless */
    for (Py_ssize_t k = 0; k < h->n * NFRAMES; k++)
        z.msg_close(&h->msgs[k]);
    PyMem_RawFree(h->msgs);
    PyMem_Free(h->encs);
    Py_XDECREF(h->topics);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static Py_ssize_t held_len(HeldObject *h) { return h->n; }

static PyObject *frame_bytes(zmq_msg_t *m) {
    return PyBytes_FromStringAndSize(z.msg_data(m), (Py_ssize_t)z.msg_size(m));
}

/* records() -> [(topic, encoding name, payload bytes)]: for the per-message path */
static PyObject *held_records(HeldObject *h, PyObject *unused) {
    if (h->sent) {
        PyErr_SetString(PyExc_ValueError, "this batch was sent: its frames are gone");
        return NULL;
    }
    PyObject *out = PyList_New(h->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < h->n; k++) {
        PyObject *rec = PyTuple_New(3), *payload = frame_bytes(&h->msgs[NFRAMES * k + 2]);
        if (rec == NULL || payload == NULL) {
            Py_XDECREF(rec);
            Py_XDECREF(payload);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *topic = PyList_GET_ITEM(h->topics, k), *name = PyTuple_GET_ITEM(enc_names, h->encs[k]);
        Py_INCREF(topic);
        Py_INCREF(name);
        PyTuple_SET_ITEM(rec, 0, topic);
        PyTuple_SET_ITEM(rec, 1, name);
        PyTuple_SET_ITEM(rec, 2, payload);
        PyList_SET_ITEM(out, k, rec);
    }
    return out;
}

static PyMethodDef held_methods[] = {
    {"records", (PyCFunction)held_records, METH_NOARGS, "The messages as (topic, encoding, payload) tuples."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods held_as_sequence = {.sq_length = (lenfunc)held_len};

static PyTypeObject HeldType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mlgym.bus._hotpath.Held",
    .tp_basicsize = sizeof(HeldObject),
    .tp_dealloc = (destructor)held_dealloc,
    .tp_as_sequence = &held_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A received batch's accepted messages, held for zero-copy forwarding.",
    .tp_methods = held_methods,
};

/* msgpack's shortest headers, as msgspec writes them (the log's rows stay byte-identical) */
static size_t str_header(size_t len) { return len < 32 ? 1 : len <= 0xff ? 2 : len <= 0xffff ? 3 : 5; }
static size_t bin_header(size_t len) { return len <= 0xff ? 2 : len <= 0xffff ? 3 : 5; }
static size_t array_header(size_t len) { return len < 16 ? 1 : len <= 0xffff ? 3 : 5; }

static unsigned char *put_len(unsigned char *p, size_t len, size_t width) {
    for (size_t i = width; i > 0; i--) {
        p[i - 1] = (unsigned char)len;
        len >>= 8;
    }
    return p + width;
}

static unsigned char *put_str(unsigned char *p, const char *data, size_t len) {
    size_t h = str_header(len);
    if (h == 1) {
        *p++ = (unsigned char)(0xa0 | len);
    } else {
        *p++ = h == 2 ? 0xd9 : h == 3 ? 0xda : 0xdb;
        p = put_len(p, len, h - 1);
    }
    memcpy(p, data, len);
    return p + len;
}

static unsigned char *put_bin(unsigned char *p, const char *data, size_t len) {
    size_t h = bin_header(len);
    *p++ = h == 2 ? 0xc4 : h == 3 ? 0xc5 : 0xc6;
    p = put_len(p, len, h - 1);
    memcpy(p, data, len);
    return p + len;
}

static unsigned char *put_array(unsigned char *p, size_t len) {
    size_t h = array_header(len);
    if (h == 1) {
        *p++ = (unsigned char)(0x90 | len);
        return p;
    }
    *p++ = h == 3 ? 0xdc : 0xdd;
    return put_len(p, len, h - 1);
}

/* recv_batch(handle, limit, budget) -> (held, topics, lens, packed, row, odd, malformed)
 *
 * Reads, without blocking, up to `limit` messages, or fewer once their payloads hold `budget`
 * bytes. held: the three-frame messages with a known encoding, a UTF-8 topic and a payload of
 * at most max_payload bytes, in arrival order, their frames kept (a Held). topics and lens:
 * their topics (str; runs of one topic share an object) and payload sizes. odd: [topic,
 * encoding, payload] frames of the other three-frame messages (for the caller to judge and
 * count). malformed: messages with another frame count, dropped here. When every held message
 * is msgpack-encoded (encodings[0]): packed is one msgpack array of all their payloads back to
 * back (one decode call can validate the batch) and row is the event log's encoding of the
 * batch, a msgpack array of [topic, encoding, payload]; else both are None. */
static PyObject *hp_recv_batch(PyObject *self, PyObject *args) {
    PyObject *hobj;
    Py_ssize_t limit, budget;
    if (!PyArg_ParseTuple(args, "Onn", &hobj, &limit, &budget))
        return NULL;
    void *sock = socket_handle(hobj);
    if (sock == NULL)
        return NULL;
    if (limit < 1)
        limit = 1;
    zmq_msg_t *msgs = PyMem_RawMalloc(sizeof(zmq_msg_t) * NFRAMES * (size_t)limit);
    if (msgs == NULL)
        return PyErr_NoMemory();

    Py_ssize_t n = 0, malformed = 0;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    while (n < limit && budget > 0) {
        zmq_msg_t *m = msgs + NFRAMES * n;
        int got = 0, more = 1;
        while (got < NFRAMES && more) {
            z.msg_init(&m[got]);
            if (z.msg_recv(&m[got], sock, ZMQ_DONTWAIT) < 0) {
                int e = z.zerrno();
                z.msg_close(&m[got]);
                /* EAGAIN before a message's first frame: drained. Within a message it cannot
                 * happen (multipart delivery is atomic); treat it like the end all the same. */
                if (e != EAGAIN)
                    err = e;
                more = -1;
                break;
            }
            more = z.msg_more(&m[got]);
            got++;
        }
        if (more == -1) {
            for (int i = 0; i < got; i++)
                z.msg_close(&m[i]);
            if (got > 0)
                malformed++;
            break;
        }
        if (got < NFRAMES || more) {  /* too few frames, or more than three: drop it whole */
            zmq_msg_t extra;
            while (more) {
                z.msg_init(&extra);
                if (z.msg_recv(&extra, sock, ZMQ_DONTWAIT) < 0) {
                    z.msg_close(&extra);
                    break;
                }
                more = z.msg_more(&extra);
                z.msg_close(&extra);
            }
            for (int i = 0; i < got; i++)
                z.msg_close(&m[i]);
            malformed++;
            continue;
        }
        budget -= (Py_ssize_t)z.msg_size(&m[2]);
        n++;
    }
    Py_END_ALLOW_THREADS

    /* `msgs` from here: the first `kept` messages are the held ones (compacted in place), the
     * rest are closed at the end */
    Py_ssize_t kept = 0, k = 0;
    HeldObject *held = NULL;
    PyObject *topics = NULL, *lens = NULL, *odd = NULL, *packed = NULL, *row = NULL, *result = NULL;
    if (err && n == 0) {  /* with messages in hand, return them: the next call raises */
        PyErr_Format(PyExc_OSError, "libzmq error %d: %s", err, z.strerror(err));
        goto done;
    }
    held = PyObject_New(HeldObject, &HeldType);
    if (held == NULL)
        goto done;
    held->msgs = NULL;
    held->n = 0;
    held->sent = 0;
    held->topics = NULL;
    held->encs = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n > 0 ? n : 1));
    topics = PyList_New(0);
    lens = PyList_New(0);
    odd = PyList_New(0);
    if (held->encs == NULL || topics == NULL || lens == NULL || odd == NULL) {
        if (held->encs == NULL)
            PyErr_NoMemory();
        goto done;
    }
    PyObject *last_topic = NULL;  /* borrowed from topics: runs of one topic share it */
    const char *last_data = NULL;
    size_t last_size = 0, packed_size = 0, row_size = 0;
    int all_first = 1;
    for (; k < n; k++) {
        zmq_msg_t *m = msgs + NFRAMES * k;
        const char *tdata = z.msg_data(&m[0]);
        size_t tsize = z.msg_size(&m[0]);
        size_t psize = z.msg_size(&m[2]);
        Py_ssize_t enc = encoding_index(z.msg_data(&m[1]), z.msg_size(&m[1]));
        PyObject *topic = NULL;
        if (enc >= 0 && (Py_ssize_t)psize <= max_payload) {
            if (last_topic != NULL && tsize == last_size && memcmp(tdata, last_data, tsize) == 0) {
                topic = last_topic;
                Py_INCREF(topic);
            } else {
                topic = PyUnicode_DecodeUTF8(tdata, (Py_ssize_t)tsize, NULL);
                if (topic == NULL)
                    PyErr_Clear();  /* not UTF-8: the caller judges it */
            }
        }
        if (topic == NULL) {
            PyObject *frames = Py_BuildValue("[NNN]", frame_bytes(&m[0]), frame_bytes(&m[1]), frame_bytes(&m[2]));
            if (frames == NULL || PyList_Append(odd, frames) < 0) {
                Py_XDECREF(frames);
                goto done;
            }
            Py_DECREF(frames);
            for (int i = 0; i < NFRAMES; i++)
                z.msg_close(&m[i]);
            continue;
        }
        PyObject *len = PyLong_FromSize_t(psize);
        int failed = len == NULL || PyList_Append(topics, topic) < 0 || PyList_Append(lens, len) < 0;
        Py_DECREF(topic);  /* topics holds it */
        Py_XDECREF(len);
        if (failed)
            goto done;
        if (kept != k)
            memcpy(msgs + NFRAMES * kept, m, sizeof(zmq_msg_t) * NFRAMES);  /* move, not copy */
        held->encs[kept++] = enc;
        last_topic = topic;
        last_data = tdata;
        last_size = tsize;
        all_first &= (enc == 0);
        packed_size += psize;
        row_size += 1 + str_header(tsize) + tsize + bin_header(psize) + psize;
    }
    if (all_first && kept > 0) {
        Py_ssize_t name_len;
        const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(enc_names, 0), &name_len);
        if (name == NULL)
            goto done;
        row_size += (size_t)kept * (str_header((size_t)name_len) + (size_t)name_len);
        packed = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(5 + packed_size));
        row = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(array_header((size_t)kept) + row_size));
        if (packed == NULL || row == NULL)
            goto done;
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(packed);
        unsigned char *r = put_array((unsigned char *)PyBytes_AS_STRING(row), (size_t)kept);
        *p++ = 0xdd;  /* msgpack array 32 */
        p = put_len(p, (size_t)kept, 4);
        for (Py_ssize_t i = 0; i < kept; i++) {
            zmq_msg_t *m = msgs + NFRAMES * i;
            size_t psize = z.msg_size(&m[2]);
            memcpy(p, z.msg_data(&m[2]), psize);
            p += psize;
            *r++ = 0x93;  /* [topic, encoding, payload] */
            r = put_str(r, z.msg_data(&m[0]), z.msg_size(&m[0]));
            r = put_str(r, name, (size_t)name_len);
            r = put_bin(r, z.msg_data(&m[2]), psize);
        }
    } else {
        packed = Py_None;
        Py_INCREF(packed);
        row = Py_None;
        Py_INCREF(row);
    }
    held->msgs = msgs;  /* the held frames and their memory now belong to `held` */
    held->n = kept;
    Py_INCREF(topics);
    held->topics = topics;
    msgs = NULL;
    result = Py_BuildValue("(OOOOOOn)", (PyObject *)held, topics, lens, packed, row, odd, malformed);
done:
    if (msgs != NULL) {  /* failed before the hand-over: close everything still open */
        for (Py_ssize_t i = 0; i < kept * NFRAMES; i++)
            z.msg_close(&msgs[i]);
        for (Py_ssize_t i = k * NFRAMES; i < n * NFRAMES; i++)
            z.msg_close(&msgs[i]);
        PyMem_RawFree(msgs);
    }
    Py_XDECREF(held);
    Py_XDECREF(topics);
    Py_XDECREF(lens);
    Py_XDECREF(odd);
    Py_XDECREF(packed);
    Py_XDECREF(row);
    return result;
}

typedef struct {
    const char *topic, *enc, *payload;
    Py_ssize_t topic_len, enc_len, payload_len;
} frames_t;

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

/* send_batch(handle, records, first_seq, epoch) -> sent: every record (topic str, encoding
 * name str, payload bytes) as [topic][stamp][encoding][payload], where stamp is the
 * big-endian u64 pair (seq, epoch) and seqs count up from first_seq. The socket must not
 * block (XPUB drops instead). */
static PyObject *hp_send_batch(PyObject *self, PyObject *args) {
    PyObject *hobj, *records;
    unsigned long long first, epoch;
    if (!PyArg_ParseTuple(args, "OO!KK", &hobj, &PyList_Type, &records, &first, &epoch))
        return NULL;
    void *sock = socket_handle(hobj);
    if (sock == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(records);
    if (n == 0)
        return PyLong_FromLong(0);
    frames_t *f = PyMem_Malloc(sizeof(frames_t) * (size_t)n);
    if (f == NULL)
        return PyErr_NoMemory();
    /* Hold a reference to the list and a private copy of it: the frames' memory belongs to
     * its items, which must live while the GIL is released. */
    PyObject *items = PyList_GetSlice(records, 0, n);
    if (items == NULL) {
        PyMem_Free(f);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != 3) {
            PyErr_SetString(PyExc_TypeError, "records must be (topic, encoding, payload) tuples");
            goto fail;
        }
        PyObject *payload = PyTuple_GET_ITEM(rec, 2);
        if (!PyBytes_Check(payload)) {
            PyErr_SetString(PyExc_TypeError, "payload must be bytes");
            goto fail;
        }
        f[i].topic = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(rec, 0), &f[i].topic_len);
        if (f[i].topic == NULL)
            goto fail;
        f[i].enc = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(rec, 1), &f[i].enc_len);
        if (f[i].enc == NULL)
            goto fail;
        f[i].payload = PyBytes_AS_STRING(payload);
        f[i].payload_len = PyBytes_GET_SIZE(payload);
    }
    Py_ssize_t sent = 0;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    unsigned char stamp[16];
    put_u64(stamp + 8, epoch);
    for (; sent < n; sent++) {
        put_u64(stamp, first + (uint64_t)sent);
        if (z.send(sock, f[sent].topic, (size_t)f[sent].topic_len, ZMQ_SNDMORE) < 0 ||
            z.send(sock, stamp, sizeof stamp, ZMQ_SNDMORE) < 0 ||
            z.send(sock, f[sent].enc, (size_t)f[sent].enc_len, ZMQ_SNDMORE) < 0 ||
            z.send(sock, f[sent].payload, (size_t)f[sent].payload_len, 0) < 0) {
            err = z.zerrno();
            break;
        }
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(items);
    PyMem_Free(f);
    if (err) {
        PyErr_Format(PyExc_OSError, "libzmq error %d after %zd messages: %s", err, sent, z.strerror(err));
        return NULL;
    }
    return PyLong_FromSsize_t(sent);
fail:
    Py_DECREF(items);
    PyMem_Free(f);
    return NULL;
}

/* send_held(handle, held, first_seq, epoch) -> sent: send_batch for a Held batch, forwarding
 * the received frames themselves (zmq_msg_send: no copy, no allocation). A batch is sent at
 * most once; its frames are gone afterwards. */
static PyObject *hp_send_held(PyObject *self, PyObject *args) {
    PyObject *hobj;
    HeldObject *h;
    unsigned long long first, epoch;
    if (!PyArg_ParseTuple(args, "OO!KK", &hobj, &HeldType, &h, &first, &epoch))
        return NULL;
    void *sock = socket_handle(hobj);
    if (sock == NULL)
        return NULL;
    if (h->sent) {
        PyErr_SetString(PyExc_ValueError, "this batch was already sent");
        return NULL;
    }
    h->sent = 1;
    Py_ssize_t sent = 0;
    int err = 0;
    Py_INCREF(h);  /* its frames must live while the GIL is released */
    Py_BEGIN_ALLOW_THREADS
    unsigned char stamp[16];
    put_u64(stamp + 8, epoch);
    for (; sent < h->n; sent++) {
        zmq_msg_t *m = h->msgs + NFRAMES * sent;
        put_u64(stamp, first + (uint64_t)sent);
        if (z.msg_send(&m[0], sock, ZMQ_SNDMORE) < 0 || z.send(sock, stamp, sizeof stamp, ZMQ_SNDMORE) < 0 ||
            z.msg_send(&m[1], sock, ZMQ_SNDMORE) < 0 || z.msg_send(&m[2], sock, 0) < 0) {
            err = z.zerrno();
            break;
        }
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(h);
    if (err) {
        PyErr_Format(PyExc_OSError, "libzmq error %d after %zd messages: %s", err, sent, z.strerror(err));
        return NULL;
    }
    return PyLong_FromSsize_t(sent);
}

static PyMethodDef methods[] = {
    {"bind", hp_bind, METH_VARARGS, "Find libzmq through pyzmq's backend module and set the encodings."},
    {"recv_batch", hp_recv_batch, METH_VARARGS, "Read a batch of 3-frame messages without blocking."},
    {"send_batch", hp_send_batch, METH_VARARGS, "Send stamped records, 4 frames each."},
    {"send_held", hp_send_held, METH_VARARGS, "Send a Held batch stamped, forwarding its frames."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hotpath", NULL, -1, methods};

/* Bumped whenever a function's arguments or results change: bus/hotpath.py refuses a module
 * built from other sources (an editable install whose extension was not rebuilt). */
#define HOTPATH_ABI 2

PyMODINIT_FUNC PyInit__hotpath(void) {
    if (PyType_Ready(&HeldType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", HOTPATH_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
