; Inno Setup script for the charstudio Windows installer.
; Input: dist\charstudio\ made by PyInstaller from packaging\charstudio.spec.
; Build: iscc packaging\charstudio.iss   (output: dist\installer\charstudio-setup-<version>.exe)

#define AppName "charstudio"
#define AppVersion "0.1.0"

[Setup]
AppId={{6F1C2B9E-5D0A-4C1B-9E3F-7A2D8C4B1E60}
AppName={#AppName}
AppVersion={#AppVersion}
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
OutputDir=..\dist\installer
OutputBaseFilename=charstudio-setup-{#AppVersion}
Compression=lzma2/ultra64
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
; Per-user install by default: artists rarely have admin rights on shared machines.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog

[Files]
Source: "..\dist\charstudio\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\charstudio.exe"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\charstudio.exe"; Tasks: desktopicon

[Tasks]
Name: "desktopicon"; Description: "Create a desktop shortcut"; GroupDescription: "Shortcuts:"

[Run]
Filename: "{app}\charstudio.exe"; Description: "Launch charstudio"; Flags: nowait postinstall skipifsilent
