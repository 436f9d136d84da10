/*
 * umonitor._speedups: an optional accelerator for the collector's ingest path,
 * the indexer and queries. Four fast paths in three sources, each taking only
 * the common case and leaving everything else to the pure-Python reference:
 *
 *   _speedups_format.c   format_records: RECORD frames -> app.log lines
 *   _speedups_syslog.c   syslog_lines: plain RFC 5424 frames -> syslog.log lines
 *   _speedups_blocks.c   summarize_lines: log file lines -> block summaries
 *                        scan_lines: a block's lines -> the ones a query may want
 *                        gram_list: a gram bitmap -> its set grams
 *
 * What they share is in _speedups_common.c (declared in _speedups.h); this
 * file is the module: its method table and its initialisation.
 */

#include "_speedups.h"

static PyMethodDef speedups_methods[] = {
    {"format_records", (PyCFunction)(void (*)(void))format_records, METH_FASTCALL,
     format_records_doc},
    {"syslog_lines", (PyCFunction)(void (*)(void))syslog_lines, METH_FASTCALL, syslog_lines_doc},
    {"summarize_lines", (PyCFunction)(void (*)(void))summarize_lines, METH_FASTCALL,
     summarize_lines_doc},
    {"scan_lines", (PyCFunction)(void (*)(void))scan_lines, METH_FASTCALL, scan_lines_doc},
    {"gram_list", (PyCFunction)(void (*)(void))gram_list, METH_FASTCALL, gram_list_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "umonitor._speedups",
    "Optional C accelerator for the collector's ingest path, the indexer and queries.",
    -1,
    speedups_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_byte_class();
    blocks_init();
    return PyModule_Create(&speedups_module);
}
