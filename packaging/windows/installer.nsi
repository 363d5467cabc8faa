; The charstudio installer: a per-user install (no administrator rights) of the launcher, uv and
; the app's source. Python and the app's libraries are not in here: charstudio.exe fetches
; Python on its first run and app\start.pyw builds the environment (see packaging/README.md).
;
; Layout of the install folder ($INSTDIR, by default %LOCALAPPDATA%\Programs\charstudio):
;   charstudio.exe, uninstall.exe, install-complete.txt   written by this installer
;   uv\uv.exe, uv\uvw.exe, app\                            written by this installer
;   python\, cache\, env\, setup.lock                      written by the first run
;
; Built by packaging/build_installer.py:
;   makensis -INPUTCHARSET UTF8 -DVERSION=0.1.0 -DVERSION_QUAD=0.1.0.0 -DSTAGE=<staging folder>
;            -DOUTFILE=<path>\charstudio-setup-0.1.0.exe installer.nsi
; The staging folder holds charstudio.exe, uv\uv.exe, uv\uvw.exe and app\.

Unicode true
Target amd64-unicode
ManifestDPIAware true
SetCompressor /SOLID lzma

!ifndef VERSION
  !error "Define VERSION (packaging/build_installer.py does)"
!endif
!ifndef STAGE
  !error "Define STAGE (packaging/build_installer.py does)"
!endif
!ifndef OUTFILE
  !error "Define OUTFILE (packaging/build_installer.py does)"
!endif
!ifndef VERSION_QUAD
  !define VERSION_QUAD "0.0.0.0"
!endif

!define APP "charstudio"
!define PUBLISHER "charstudio"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\${APP}"
!define SENTINEL "install-complete.txt"  ; written last: its presence means the install finished

!include MUI2.nsh
!include FileFunc.nsh
!include LogicLib.nsh

Name "${APP}"
Caption "${APP} ${VERSION} Setup"
UninstallCaption "${APP} Uninstall"
BrandingText "${APP} ${VERSION}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\${APP}"
InstallDirRegKey HKCU "${UNINSTALL_KEY}" "InstallLocation"  ; an update goes where the last install went
RequestExecutionLevel user
ShowInstDetails show
ShowUninstDetails show

VIProductVersion "${VERSION_QUAD}"
VIAddVersionKey "ProductName" "${APP}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "${APP} ${VERSION} Setup"
VIAddVersionKey "CompanyName" "${PUBLISHER}"
VIAddVersionKey "LegalCopyright" "${PUBLISHER}"

!define MUI_ICON "${__FILEDIR__}\charstudio.ico"
!define MUI_UNICON "${__FILEDIR__}\charstudio.ico"
!define MUI_WELCOMEFINISHPAGE_BITMAP "${__FILEDIR__}\wizard.bmp"  ; drawn by packaging/make_icon.py
!define MUI_ABORTWARNING

!define MUI_WELCOMEPAGE_TEXT "This will install ${APP} ${VERSION} for you (no administrator rights needed).$\r$\n$\r$\n\
The first time ${APP} starts, it downloads Python and its libraries, including PyTorch for your \
graphics card: several gigabytes, so it needs an internet connection and can take a while. \
Later starts are quick and work offline.$\r$\n$\r$\n\
Your projects and settings are never touched by installing, updating or uninstalling ${APP}.$\r$\n$\r$\n\
$_CLICK"
!insertmacro MUI_PAGE_WELCOME
!define MUI_PAGE_CUSTOMFUNCTION_LEAVE DirectoryLeave
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_INSTFILES
!define MUI_FINISHPAGE_RUN "$INSTDIR\charstudio.exe"
!define MUI_FINISHPAGE_RUN_TEXT "Run ${APP}"
!insertmacro MUI_PAGE_FINISH

!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES

!insertmacro MUI_LANGUAGE "English"

; $R0 = 1 when $INSTDIR holds an app\, uv\, env\, python\ or cache\ folder that charstudio did
; not make (an update deletes the old app\ and uv\; the uninstaller deletes all five), else 0.
Function IsForeignFolder
  StrCpy $R0 0
  ReadRegStr $R1 HKCU "${UNINSTALL_KEY}" "InstallLocation"
  ${If} ${FileExists} "$INSTDIR\${SENTINEL}"
  ${OrIf} $R1 == "$INSTDIR"
    Return  ; an earlier charstudio install: update it
  ${EndIf}
  ${If} ${FileExists} "$INSTDIR\charstudio.exe"
  ${AndIf} ${FileExists} "$INSTDIR\uninstall.exe"
    Return  ; an earlier install that did not finish
  ${EndIf}
  ${If} ${FileExists} "$INSTDIR\app\*.*"
  ${OrIf} ${FileExists} "$INSTDIR\uv\*.*"
  ${OrIf} ${FileExists} "$INSTDIR\env\*.*"
  ${OrIf} ${FileExists} "$INSTDIR\python\*.*"
  ${OrIf} ${FileExists} "$INSTDIR\cache\*.*"
    StrCpy $R0 1
  ${EndIf}
FunctionEnd

; $R0 = 1 when charstudio (or its first-run setup) is running from $INSTDIR, else 0. Windows
; keeps a running program's file locked, so opening it for writing fails.
!macro CHECK_LOCKED FILE
  ${If} ${FileExists} "${FILE}"
    ClearErrors
    FileOpen $R1 "${FILE}" a
    ${If} ${Errors}
      StrCpy $R0 1
    ${Else}
      FileClose $R1
    ${EndIf}
  ${EndIf}
!macroend
!macro IS_RUNNING_FUNCTION UN
  Function ${UN}IsRunning
    StrCpy $R0 0
    !insertmacro CHECK_LOCKED "$INSTDIR\uv\uv.exe"
    !insertmacro CHECK_LOCKED "$INSTDIR\uv\uvw.exe"
    !insertmacro CHECK_LOCKED "$INSTDIR\env\Scripts\python.exe"
    !insertmacro CHECK_LOCKED "$INSTDIR\env\Scripts\pythonw.exe"
  FunctionEnd
!macroend
!insertmacro IS_RUNNING_FUNCTION ""
!insertmacro IS_RUNNING_FUNCTION "un."

; Waits while charstudio runs from $INSTDIR, asking the user to close it (Retry/Cancel); on
; Cancel, or in a silent run, gives up with exit code 2 before anything was changed.
!macro WAIT_UNTIL_CLOSED UN
  ${Do}
    Call ${UN}IsRunning
    ${If} $R0 = 0
      ${Break}
    ${EndIf}
    MessageBox MB_RETRYCANCEL|MB_ICONEXCLAMATION "${APP} is running. Please close it, then choose Retry." /SD IDCANCEL IDRETRY +3
    SetErrorLevel 2
    Abort
  ${Loop}
!macroend

!define FOREIGN_FOLDER_MESSAGE "The folder$\r$\n$INSTDIR$\r$\nalready holds files that ${APP} did not \
install. Please choose an empty folder or a new one."

Function DirectoryLeave
  Call IsForeignFolder
  ${If} $R0 = 1
    MessageBox MB_OK|MB_ICONSTOP "${FOREIGN_FOLDER_MESSAGE}"
    Abort  ; stay on the page
  ${EndIf}
FunctionEnd

Section "${APP}" SecApp
  SectionIn RO
  SetOutPath "$INSTDIR"
  Call IsForeignFolder  ; again, for silent installs (/S /D=...)
  ${If} $R0 = 1
    MessageBox MB_OK|MB_ICONSTOP "${FOREIGN_FOLDER_MESSAGE}" /SD IDOK
    SetErrorLevel 2
    Abort
  ${EndIf}
  !insertmacro WAIT_UNTIL_CLOSED ""
  Delete "$INSTDIR\${SENTINEL}"

  ; An update replaces the program files (so files dropped from the new version don't linger)
  ; and keeps python\, cache\ and env\: the first start of the new version brings env\ up to
  ; date with its lock file.
  RMDir /r "$INSTDIR\app"
  RMDir /r "$INSTDIR\uv"
  ${If} ${FileExists} "$INSTDIR\app\*.*"
  ${OrIf} ${FileExists} "$INSTDIR\uv\*.*"
    MessageBox MB_OK|MB_ICONSTOP "The files of the installed ${APP} are in use. Please close ${APP} and run Setup again." /SD IDOK
    SetErrorLevel 2
    Abort
  ${EndIf}

  SetOutPath "$INSTDIR\app"
  File /r "${STAGE}\app\*.*"
  SetOutPath "$INSTDIR\uv"
  File "${STAGE}\uv\uv.exe"
  File "${STAGE}\uv\uvw.exe"
  SetOutPath "$INSTDIR"
  File "${STAGE}\charstudio.exe"
  WriteUninstaller "$INSTDIR\uninstall.exe"

  ; The optional sections below make the shortcuts the user asked for this time.
  Delete "$SMPROGRAMS\${APP}.lnk"
  Delete "$DESKTOP\${APP}.lnk"
SectionEnd

Section "Start menu entry" SecStartMenu
  SetOutPath "$INSTDIR"  ; the shortcut's working folder
  CreateShortCut "$SMPROGRAMS\${APP}.lnk" "$INSTDIR\charstudio.exe" "" "$INSTDIR\charstudio.exe" 0
SectionEnd

Section "Desktop shortcut" SecDesktop
  SetOutPath "$INSTDIR"
  CreateShortCut "$DESKTOP\${APP}.lnk" "$INSTDIR\charstudio.exe" "" "$INSTDIR\charstudio.exe" 0
SectionEnd

Section "-Register"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayName" "${APP}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\charstudio.exe"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoRepair" 1
  ; The whole folder, so an update counts the Python and libraries of the first run.
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "EstimatedSize" $0

  ; Last of all: a silent install (/S) exits 0 even when it failed, so checks look for this.
  FileOpen $0 "$INSTDIR\${SENTINEL}" w
  FileWrite $0 "${VERSION}"
  FileClose $0
SectionEnd

!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecApp} "${APP} itself: the launcher, uv and the app."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecStartMenu} "A ${APP} entry in the Start menu."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecDesktop} "A ${APP} shortcut on the desktop."
!insertmacro MUI_FUNCTION_DESCRIPTION_END

; ---------------------------------------------------------------------------------------------
; The uninstaller removes what the installer and the first run made, and nothing else: projects
; (folders anywhere), settings (HKCU\Software\charstudio) and logs (%LOCALAPPDATA%\charstudio)
; stay, and so does anything else the user put in the install folder.

Function un.onInit
  ; Refuse a folder that does not look like a charstudio install, rather than delete in it.
  StrCpy $1 "no"
  ${If} ${FileExists} "$INSTDIR\charstudio.exe"
  ${OrIf} ${FileExists} "$INSTDIR\${SENTINEL}"
    StrCpy $1 "yes"
  ${EndIf}
  StrLen $0 "$INSTDIR"
  ${If} $0 <= 3  ; a drive root, such as C: with its backslash
    StrCpy $1 "no"
  ${EndIf}
  ${If} $1 != "yes"
    MessageBox MB_OK|MB_ICONSTOP "$INSTDIR$\r$\ndoes not look like a ${APP} installation, so nothing was removed." /SD IDOK
    SetErrorLevel 2
    Quit
  ${EndIf}
FunctionEnd

Section "Uninstall"
  !insertmacro WAIT_UNTIL_CLOSED "un."

  ; The shortcuts and the Apps & features entry belong to the install that registered itself
  ; last; leave them alone if that is a copy in another folder.
  ReadRegStr $0 HKCU "${UNINSTALL_KEY}" "InstallLocation"
  ${If} $0 == "$INSTDIR"
  ${OrIf} $0 == ""
    Delete "$SMPROGRAMS\${APP}.lnk"
    Delete "$DESKTOP\${APP}.lnk"
    DeleteRegKey HKCU "${UNINSTALL_KEY}"
  ${EndIf}

  ; uv keeps its links (Python's minor-version folder, cache entries) inside these folders.
  RMDir /r "$INSTDIR\app"
  RMDir /r "$INSTDIR\uv"
  RMDir /r "$INSTDIR\env"
  RMDir /r "$INSTDIR\python"
  RMDir /r "$INSTDIR\cache"
  Delete "$INSTDIR\setup.lock"  ; the first run's lock (app\charstudio\install\first_run.py)
  Delete "$INSTDIR\charstudio.exe"
  Delete "$INSTDIR\${SENTINEL}"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"  ; only if empty: files the user put here stay

  ${If} ${FileExists} "$INSTDIR\env\*.*"
  ${OrIf} ${FileExists} "$INSTDIR\python\*.*"
  ${OrIf} ${FileExists} "$INSTDIR\app\*.*"
    MessageBox MB_OK|MB_ICONEXCLAMATION "Some files in$\r$\n$INSTDIR$\r$\ncould not be removed; ${APP} may still be running. Close it and run the uninstaller again." /SD IDOK
    SetErrorLevel 2
  ${EndIf}
SectionEnd
