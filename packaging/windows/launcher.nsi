; charstudio.exe, the program the shortcuts start. It has no window of its own:
;   1. points uv at folders inside the install folder (Python, cache) and tells the app where
;      it is installed (CHARSTUDIO_HOME);
;   2. on the first run, downloads the Python that charstudio runs on (uv python install),
;      with a small "please wait" window, writing uv's output to the setup log;
;   3. starts app\start.pyw with that Python through uvw.exe (no console window), passing on
;      its own command-line arguments as they were written, and exits. (As in every NSIS
;      program, an argument starting with /D= and all that follows it are not passed on.)
;
; Built by packaging/build_installer.py:
;   makensis -INPUTCHARSET UTF8 -DVERSION=0.1.0 -DVERSION_QUAD=0.1.0.0 -DWINDOWS_PYTHON=3.11
;            -DOUTFILE=<path>\charstudio.exe launcher.nsi

Unicode true
Target amd64-unicode
ManifestDPIAware true
SetCompressor /SOLID lzma

!ifndef VERSION
  !error "Define VERSION (packaging/build_installer.py does)"
!endif
!ifndef WINDOWS_PYTHON
  !error "Define WINDOWS_PYTHON (packaging/build_installer.py does)"
!endif
!ifndef OUTFILE
  !error "Define OUTFILE (packaging/build_installer.py does)"
!endif
!ifndef VERSION_QUAD
  !define VERSION_QUAD "0.0.0.0"
!endif

!include FileFunc.nsh
!include LogicLib.nsh

Name "charstudio"
Caption "charstudio"  ; the title of its message boxes
OutFile "${OUTFILE}"
Icon "${__FILEDIR__}\charstudio.ico"
SilentInstall silent
RequestExecutionLevel user
; The Modern UI's "please wait" dialog (a heading and a line), for the first-run Banner.
ChangeUI IDD_VERIFY "${NSISDIR}\Contrib\UIs\modern.exe"

VIProductVersion "${VERSION_QUAD}"
VIAddVersionKey "ProductName" "charstudio"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "charstudio"
VIAddVersionKey "LegalCopyright" "charstudio"

Var Log   ; %LOCALAPPDATA%\charstudio\logs\setup.log, shared with start.pyw's first-run setup

; Sets a variable in this process's environment; uv and the app inherit it.
!macro SetEnv NAME VALUE
  StrCpy $1 "${NAME}"
  StrCpy $2 "${VALUE}"
  System::Call 'kernel32::SetEnvironmentVariableW(w r1, w r2) i'
!macroend

; Appends one line, UTF-8 encoded, to the setup log (the same encoding uv and Python write).
; In: $R9 the line. Keeps every other register.
Function AppendLog
  Push $R1
  Push $R2
  Push $R3
  Push $R8
  StrCpy $R8 $Log
  ; FILE_APPEND_DATA, share read/write/delete, OPEN_ALWAYS
  System::Call 'kernel32::CreateFileW(w R8, i 4, i 7, p 0, i 4, i 0x80, p 0) p .R1'
  ${If} $R1 != -1
    StrCpy $R9 "$R9$\r$\n"
    System::Call 'kernel32::WideCharToMultiByte(i 65001, i 0, w R9, i -1, p 0, i 0, p 0, p 0) i .R2'
    System::Alloc $R2
    Pop $R3
    System::Call 'kernel32::WideCharToMultiByte(i 65001, i 0, w R9, i -1, p R3, i R2, p 0, p 0) i .R2'
    IntOp $R2 $R2 - 1  ; leave out the terminating NUL
    System::Call 'kernel32::WriteFile(p R1, p R3, i R2, *i 0, p 0) i'
    System::Free $R3
    System::Call 'kernel32::CloseHandle(p R1) i'
  ${EndIf}
  Pop $R8
  Pop $R3
  Pop $R2
  Pop $R1
FunctionEnd

; Runs a command line without a window, its output (stdout and stderr) appended to the setup
; log, and waits for it. nsExec would cut the output at 1024 characters, which can lose the
; cause at the end of uv's error chain; this keeps all of it.
; In: $R9 the command line. Out: $R0 the exit code, or "error" when it could not be started.
Function RunToLog
  Push $R1
  Push $R2
  Push $R3
  Push $R4
  Push $R5
  Push $R6
  Push $R7
  Push $R8
  StrCpy $R8 $Log
  ; SECURITY_ATTRIBUTES {nLength, (pad), lpSecurityDescriptor, bInheritHandle, (pad)}: an
  ; inheritable handle, so the child process can write into the log.
  System::Call '*(i 24, i 0, p 0, i 1, i 0) p .R1'
  System::Call 'kernel32::CreateFileW(w R8, i 4, i 7, p R1, i 4, i 0x80, p 0) p .R2'
  System::Free $R1
  ${If} $R2 == -1
    StrCpy $R2 0  ; no log: run it anyway, its output is lost
  ${EndIf}
  ; STARTUPINFOW (x64 layout, 104 bytes): dwFlags = STARTF_USESTDHANDLES | STARTF_USESHOWWINDOW,
  ; wShowWindow = SW_HIDE, hStdOutput = hStdError = the log.
  System::Call '*(i 104, i 0, p 0, p 0, p 0, i 0, i 0, i 0, i 0, i 0, i 0, i 0, i 0x101, \
                  &i2 0, &i2 0, i 0, p 0, p 0, p R2, p R2) p .R3'
  ; PROCESS_INFORMATION {hProcess, hThread, dwProcessId, dwThreadId}
  System::Call '*(p 0, p 0, i 0, i 0) p .R4'
  ; bInheritHandles = TRUE, CREATE_NO_WINDOW
  System::Call 'kernel32::CreateProcessW(p 0, w R9, p 0, p 0, i 1, i 0x08000000, p 0, p 0, \
                  p R3, p R4) i .R5'
  ${If} $R5 = 0
    StrCpy $R0 "error"
  ${Else}
    System::Call '*$R4(p .R6, p .R7)'
    System::Call 'kernel32::WaitForSingleObject(p R6, i -1) i'
    System::Call 'kernel32::GetExitCodeProcess(p R6, *i .R0) i'
    System::Call 'kernel32::CloseHandle(p R6) i'
    System::Call 'kernel32::CloseHandle(p R7) i'
  ${EndIf}
  System::Free $R3
  System::Free $R4
  ${If} $R2 != 0
    System::Call 'kernel32::CloseHandle(p R2) i'
  ${EndIf}
  Pop $R8
  Pop $R7
  Pop $R6
  Pop $R5
  Pop $R4
  Pop $R3
  Pop $R2
  Pop $R1
FunctionEnd

; $0 = 1 when a folder matching the pattern $R9 (in $EXEDIR\python) holds a python.exe.
Function FindPython
  Push $R0
  Push $R1
  FindFirst $R0 $R1 "$EXEDIR\python\$R9"
  ${DoWhile} $R1 != ""
    ${If} ${FileExists} "$EXEDIR\python\$R1\python.exe"
      StrCpy $0 1
      ${Break}
    ${EndIf}
    FindNext $R0 $R1
  ${Loop}
  FindClose $R0
  Pop $R1
  Pop $R0
FunctionEnd

; $0 = 1 when $EXEDIR\python holds a uv-managed CPython ${WINDOWS_PYTHON}, else 0. uv names its
; folders cpython-<version>-windows-x86_64-none (and links cpython-<minor>-... to the newest).
Function PythonPresent
  StrCpy $0 0
  StrCpy $R9 "cpython-${WINDOWS_PYTHON}.*"
  Call FindPython
  ${If} $0 = 0
    StrCpy $R9 "cpython-${WINDOWS_PYTHON}-*"
    Call FindPython
  ${EndIf}
FunctionEnd

Function InstallPython
  retry:
  ${GetTime} "" "L" $1 $2 $3 $4 $5 $6 $7
  StrCpy $R9 "[$3-$2-$1 $5:$6:$7] charstudio ${VERSION}: installing Python ${WINDOWS_PYTHON} into $EXEDIR\python"
  Call AppendLog
  ; 76: the heading, 1030: the line below it; the last string is the window's title.
  Banner::show /set 76 "Downloading Python for charstudio…" /set 1030 "(first run only)" "charstudio"
  StrCpy $R9 '"$EXEDIR\uv\uv.exe" python install --no-bin --no-registry ${WINDOWS_PYTHON}'
  Call RunToLog
  Banner::destroy
  ${If} $R0 == 0
    Return
  ${EndIf}
  StrCpy $R9 "uv python install failed (exit code $R0)"
  Call AppendLog
  MessageBox MB_RETRYCANCEL|MB_ICONEXCLAMATION "charstudio could not download Python, which it needs to run.$\r$\n$\r$\nPlease check your internet connection, then choose Retry.$\r$\n$\r$\nThe details are in$\r$\n$Log" IDRETRY retry
  SetErrorLevel 1
  Quit
FunctionEnd

Section
  ${IfNot} ${FileExists} "$EXEDIR\uv\uv.exe"
  ${OrIfNot} ${FileExists} "$EXEDIR\uv\uvw.exe"
  ${OrIfNot} ${FileExists} "$EXEDIR\app\start.pyw"
    MessageBox MB_OK|MB_ICONSTOP "Some of charstudio's files are missing from$\r$\n$EXEDIR$\r$\n$\r$\nPlease install charstudio again."
    SetErrorLevel 2
    Quit
  ${EndIf}

  !insertmacro SetEnv UV_PYTHON_INSTALL_DIR "$EXEDIR\python"
  !insertmacro SetEnv UV_CACHE_DIR "$EXEDIR\cache"
  !insertmacro SetEnv UV_PYTHON_INSTALL_BIN "0"
  !insertmacro SetEnv UV_PYTHON_INSTALL_REGISTRY "0"
  !insertmacro SetEnv UV_NO_CONFIG "1"
  !insertmacro SetEnv CHARSTUDIO_HOME "$EXEDIR"

  ; The same folder as the app's logs (charstudio/install/paths.py): CHARSTUDIO_LOG_DIR if set.
  ReadEnvStr $R1 CHARSTUDIO_LOG_DIR
  ${If} $R1 == ""
    StrCpy $R1 "$LOCALAPPDATA\charstudio\logs"
  ${EndIf}
  CreateDirectory "$R1"
  StrCpy $Log "$R1\setup.log"
  SetOutPath "$EXEDIR"  ; the working folder of uv and the app

  Call PythonPresent
  ${If} $0 = 0
    Call InstallPython
  ${EndIf}

  ${GetParameters} $R1
  ClearErrors
  Exec '"$EXEDIR\uv\uvw.exe" run --no-project --managed-python --python ${WINDOWS_PYTHON} "$EXEDIR\app\start.pyw" $R1'
  ${If} ${Errors}
    MessageBox MB_OK|MB_ICONSTOP "charstudio could not start$\r$\n$EXEDIR\uv\uvw.exe$\r$\n$\r$\nPlease install charstudio again."
    SetErrorLevel 2
  ${EndIf}
SectionEnd
