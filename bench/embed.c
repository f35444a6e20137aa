/* A minimal embedder of CPython, as the daemon embeds it: runs bench/app_loop.py with the
 * arguments it is given. bench/interpreter.sh links it with Debian's shared libpython and
 * with its static archive. */
#include <Python.h>
#include <stdio.h>

int main(int argc, char **argv) {
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    PyStatus status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    FILE *script = argc > 1 ? fopen(argv[1], "r") : NULL;
    if (script == NULL) {
        fprintf(stderr, "embed: cannot open the script %s\n", argc > 1 ? argv[1] : "(none)");
        return 2;
    }
    int rc = PyRun_SimpleFileExFlags(script, argv[1], 1, NULL);
    return Py_FinalizeEx() < 0 ? 120 : rc == 0 ? 0 : 1;
}
