import { useEffect } from "react";

/** The tab's title names the page, so history, tabs and screen readers tell pages apart. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · Ferry` : "Ferry";
  }, [title]);
}
