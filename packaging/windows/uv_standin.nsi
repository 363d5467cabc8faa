; A stand-in for uv.exe and uvw.exe, used only by packaging/wine_smoke_test.py (Debian's Wine
; cannot run the real uv). It records how charstudio.exe called it and acts out the parts of
; uv that the launcher relies on:
;   - appends its program name, command line, working folder and the UV_* / CHARSTUDIO_HOME
;     variables to calls.txt beside itself (UTF-16 with a byte-order mark);
;   - "python install ... <version>": creates
;     %UV_PYTHON_INSTALL_DIR%\cpython-<version>.99-windows-x86_64-none\python.exe and prints a
;     line to standard output, unless python-install-exit-code.txt beside it holds a number:
;     then it prints an error and exits with that code, creating nothing;
;   - anything else ("run ..."): exits 0, after as many seconds as run-seconds.txt beside it
;     holds, if it exists (so a test can look at a "running" charstudio).
;
; makensis -INPUTCHARSET UTF8 -DOUTFILE=<path>\uv.exe uv_standin.nsi

Unicode true
Target amd64-unicode
SetCompressor zlib

!ifndef OUTFILE
  !error "Define OUTFILE"
!endif

!include FileFunc.nsh
!include LogicLib.nsh
!include WordFunc.nsh

Name "uv stand-in"
OutFile "${OUTFILE}"
SilentInstall silent
RequestExecutionLevel user

; Writes $R9 and a line break to standard output (ASCII text only).
Function PrintLine
  Push $R1
  Push $R2
  System::Call 'kernel32::GetStdHandle(i -11) p .R1'
  StrCpy $R9 "$R9$\r$\n"
  StrLen $R2 $R9
  System::Call 'kernel32::WriteFile(p R1, m R9, i R2, *i 0, p 0) i'
  Pop $R2
  Pop $R1
FunctionEnd

!macro LogVar NAME
  ReadEnvStr $R1 ${NAME}
  FileWriteUTF16LE $0 "${NAME}=$R1$\r$\n"
!macroend

Section
  ${GetParameters} $R0
  System::Call 'kernel32::GetCurrentDirectoryW(i ${NSIS_MAX_STRLEN}, w .R2) i'

  FileOpen $0 "$EXEDIR\calls.txt" a
  FileSeek $0 0 END
  FileWriteUTF16LE /BOM $0 "exe=$EXEFILE$\r$\n"
  FileWriteUTF16LE $0 "args=$R0$\r$\n"
  FileWriteUTF16LE $0 "cwd=$R2$\r$\n"
  !insertmacro LogVar UV_PYTHON_INSTALL_DIR
  !insertmacro LogVar UV_CACHE_DIR
  !insertmacro LogVar UV_PYTHON_INSTALL_BIN
  !insertmacro LogVar UV_PYTHON_INSTALL_REGISTRY
  !insertmacro LogVar UV_NO_CONFIG
  !insertmacro LogVar CHARSTUDIO_HOME
  FileWriteUTF16LE $0 "end$\r$\n"
  FileClose $0

  ${WordFind} "$R0" " " "+1" $R3
  ${WordFind} "$R0" " " "+2" $R4
  ${If} $R3 == "python"
  ${AndIf} $R4 == "install"
    ${If} ${FileExists} "$EXEDIR\python-install-exit-code.txt"
      FileOpen $0 "$EXEDIR\python-install-exit-code.txt" r
      FileRead $0 $R5
      FileClose $0
      IntOp $R5 $R5 + 0
      StrCpy $R9 "error: Failed to download Python (stand-in, exit code $R5)"
      Call PrintLine
      SetErrorLevel $R5
      Quit
    ${EndIf}
    ${WordFind} "$R0" " " "-1" $R5  ; the requested version is the last word
    ReadEnvStr $R6 UV_PYTHON_INSTALL_DIR
    CreateDirectory "$R6\cpython-$R5.99-windows-x86_64-none"
    FileOpen $0 "$R6\cpython-$R5.99-windows-x86_64-none\python.exe" w
    FileWrite $0 "stand-in"
    FileClose $0
    StrCpy $R9 "Installed Python $R5.99 (stand-in)"
    Call PrintLine
  ${ElseIf} ${FileExists} "$EXEDIR\run-seconds.txt"
    FileOpen $0 "$EXEDIR\run-seconds.txt" r
    FileRead $0 $R5
    FileClose $0
    IntOp $R5 $R5 * 1000
    Sleep $R5
  ${EndIf}
  SetErrorLevel 0
SectionEnd
