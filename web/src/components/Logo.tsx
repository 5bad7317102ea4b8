/** Ferry's mark: a hull and two sails (the favicon's shapes), drawn here so no font needs the glyph. */
export function Logo() {
  return (
    <svg className="logo" viewBox="0 0 32 32" width="24" height="24" aria-hidden="true" focusable="false">
      <rect width="32" height="32" rx="6" className="logo-back" />
      <path d="M5 20h22l-3 6H8z" className="logo-hull" />
      <path d="M15 6v12h-7z" className="logo-sail" />
      <path d="M17 9v9h6z" className="logo-hull" />
    </svg>
  );
}
