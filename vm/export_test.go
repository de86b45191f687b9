package vm

// EnsureTPM creates a machine's vTPM and EK CA without booting it (tests
// that trust the EK CA and need no reference values).
var EnsureTPM = ensureTPM
